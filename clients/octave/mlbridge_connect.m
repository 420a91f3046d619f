function conn = mlbridge_connect(varargin)
%MLBRIDGE_CONNECT Find a running mlbridge server and read its secret.
%   CONN = MLBRIDGE_CONNECT() reads server.json in $MLBRIDGE_HOME (default
%   ~/.mlbridge), which `mlbridge serve` writes at start-up, and the token
%   file it names. CONN is a struct with fields url, token, ca_file and sign.
%   The folder must be the user's own and writable by no one else, the two
%   files the user's own and closed to everyone else, none of them a symbolic
%   link: otherwise mlbridge:untrusted says which path and how to fix it.
%
%   CONN = MLBRIDGE_CONNECT(URL, TOKEN_FILE) connects to another server, e.g.
%   MLBRIDGE_CONNECT('http://127.0.0.1:8765', '/path/to/token') (TOKEN_FILE is
%   checked like the token file above). URL is http on this machine (127.x.x.x,
%   localhost or [::1]) or https anywhere, without spaces or control characters;
%   anything else raises mlbridge:usage before a request is made.
%
%   Options, after either form, as name-value pairs:
%     'CAFile', PATH  PEM file of the certificate(s) an https server's certificate
%                     must chain to. Default: "ca_file" from server.json when the
%                     URL came from there, else the system's store. Verification is
%                     never switched off.
%     'Sign', true    sign each request with the secret (HMAC-SHA256) instead of
%                     sending it: the secret never crosses the wire.
%   Text arguments may be char vectors or strings.
%
%   Before the secret is first used on a server, the server must prove that it
%   knows it (GET /v2/health/proof); otherwise mlbridge:unproven, and the
%   secret is not sent.
%
%   Pass CONN as the last argument of the other mlbridge functions; without it
%   they call MLBRIDGE_CONNECT() themselves. CONN holds the secret: end the
%   call with a semicolon.
  [url, token_file, options] = split_arguments(varargin);
  ca_file = '';
  if isempty(url)
    home = mlbridge_home();
    info = read_server_json(home);
    [url, token_file] = deal(info.url, info.token_file);
    ca_file = info.ca_file;
  end
  url = mlbridge_check_url(url);
  if ~isempty(options.ca_file)
    ca_file = options.ca_file;
  end
  conn = struct('url', url, 'token', read_token(token_file), ...
                'ca_file', checked_ca_file(ca_file, url), 'sign', options.sign);
end

function [url, token_file, options] = split_arguments(args)
  % ([URL, TOKEN_FILE,] NAME, VALUE, ...): URL and TOKEN_FILE are the leading pair
  % unless the first argument is an option name (no URL is).
  [url, token_file] = deal('');
  if ~isempty(args) && ~is_option_name(args{1})
    if numel(args) < 2
      error('mlbridge:usage', 'mlbridge_connect: give both URL and TOKEN_FILE, or neither');
    end
    url = mlbridge_text(args{1}, 'URL');
    token_file = mlbridge_text(args{2}, 'TOKEN_FILE');
    args = args(3:end);
  end
  options = struct('ca_file', '', 'sign', false);
  if mod(numel(args), 2) ~= 0
    error('mlbridge:usage', ['mlbridge_connect: options come in name-value pairs, ', ...
          'e.g. (''CAFile'', ''/path/ca.pem'', ''Sign'', true)']);
  end
  for k = 1:2:numel(args)
    switch lower(option_name(args{k}))
      case 'cafile'
        options.ca_file = mlbridge_text(args{k + 1}, 'CAFile');
      case 'sign'
        options.sign = logical_option(args{k + 1});
    end
  end
end

function yes = is_option_name(value)
  yes = (ischar(value) || isa(value, 'string')) && ...
        any(strcmpi(mlbridge_text(value, 'an argument'), {'CAFile', 'Sign'}));
end

function name = option_name(value)
  if ~is_option_name(value)
    error('mlbridge:usage', ['mlbridge_connect: unknown option; expected ''CAFile'' or ', ...
          '''Sign'' (after URL and TOKEN_FILE, if given)']);
  end
  name = mlbridge_text(value, 'an option name');
end

function value = logical_option(value)
  if ~(islogical(value) || isnumeric(value)) || ~isscalar(value) || ~any(value == [0 1])
    error('mlbridge:usage', 'mlbridge_connect: ''Sign'' must be true or false');
  end
  value = logical(value);
end

function ca_file = checked_ca_file(ca_file, url)
  if isempty(ca_file)
    ca_file = '';
    return;
  end
  if ~strncmp(url, 'https://', 8)
    error('mlbridge:usage', ['mlbridge_connect: a CA file verifies an https server; ', ...
          '%s is http'], url);
  end
  if exist(ca_file, 'file') ~= 2 || any(ca_file < 32 | ca_file == 127)
    error('mlbridge:usage', ['mlbridge_connect: CA file %s is not a file; expected a PEM ', ...
          'certificate file'], ca_file);
  end
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
  mlbridge_check_private(home, 'folder');
  mlbridge_check_private(path, 'file');
  info = jsondecode(fileread(path));
  if ~isstruct(info) || ~isfield(info, 'url') || ~isfield(info, 'token_file') || ...
     ~ischar(info.url) || ~ischar(info.token_file)
    error('mlbridge:noserver', ...
          'mlbridge: %s lacks "url" or "token_file"; expected the file `mlbridge serve` writes', ...
          path);
  end
  if ~isfield(info, 'ca_file') || ~ischar(info.ca_file)
    info.ca_file = '';
  end
end

function token = read_token(token_file)
  if ~exist(token_file, 'file')
    error('mlbridge:notoken', 'mlbridge: token file %s does not exist', token_file);
  end
  mlbridge_check_private(token_file, 'file');
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
