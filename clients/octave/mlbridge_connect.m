function conn = mlbridge_connect(url, token_file)
%MLBRIDGE_CONNECT Find a running mlbridge server and read its secret.
%   CONN = MLBRIDGE_CONNECT() reads server.json in $MLBRIDGE_HOME (default
%   ~/.mlbridge), which `mlbridge serve` writes at start-up, and the token
%   file it names. CONN is a struct with fields url and token.
%
%   CONN = MLBRIDGE_CONNECT(URL, TOKEN_FILE) connects to another server on this
%   machine, e.g. MLBRIDGE_CONNECT('http://127.0.0.1:8765', '/path/to/token').
%   URL and TOKEN_FILE may be char vectors or strings. URL must be a loopback
%   http(s) URL (127.x.x.x, localhost or [::1]) without spaces or control
%   characters; anything else raises mlbridge:usage before a request is made.
%
%   Pass CONN as the last argument of MLBRIDGE_PREDICT and MLBRIDGE_MODELS;
%   without it they call MLBRIDGE_CONNECT() themselves.
  if nargin == 1
    error('mlbridge:usage', ...
          'mlbridge_connect: give both URL and TOKEN_FILE, or neither');
  end
  if nargin == 0
    info = read_server_json(mlbridge_home());
    url = info.url;
    token_file = info.token_file;
  end
  url = mlbridge_check_url(url);
  conn = struct('url', url, 'token', read_token(mlbridge_text(token_file, 'TOKEN_FILE')));
end

function home = mlbridge_home()
  home = getenv('MLBRIDGE_HOME');
  if isempty(home)
    user = getenv('HOME');
    if isempty(user)
      user = getenv('USERPROFILE');  % Windows
    end
    home = fullfile(user, '.mlbridge');
  end
end

function info = read_server_json(home)
  path = fullfile(home, 'server.json');
  if ~exist(path, 'file')
    error('mlbridge:noserver', ...
          ['mlbridge: no server found: %s does not exist; start one with ', ...
           '`mlbridge serve` or set MLBRIDGE_HOME'], path);
  end
  info = jsondecode(fileread(path));
  if ~isstruct(info) || ~isfield(info, 'url') || ~isfield(info, 'token_file') || ...
     ~ischar(info.url) || ~ischar(info.token_file)
    error('mlbridge:noserver', ...
          'mlbridge: %s lacks "url" or "token_file"; expected the file `mlbridge serve` writes', ...
          path);
  end
end

function token = read_token(token_file)
  if ~exist(token_file, 'file')
    error('mlbridge:notoken', 'mlbridge: token file %s does not exist', token_file);
  end
  token = strtrim(fileread(token_file));
  if isempty(token)
    error('mlbridge:notoken', 'mlbridge: token file %s is empty', token_file);
  end
  % The secret goes into an HTTP header (and curl's config file): printable ASCII only.
  if any(token < 33 | token > 126)
    error('mlbridge:notoken', ['mlbridge: token file %s holds spaces, control or ', ...
          'non-ASCII characters; expected the secret `mlbridge serve` writes'], token_file);
  end
end
