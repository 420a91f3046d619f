function reply = mlbridge_http(conn, method, path, body)
%MLBRIDGE_HTTP Send one request with the Bearer secret; return the decoded JSON reply.
%   Octave's webwrite cannot send a raw JSON body, so Octave goes through the
%   system curl; MATLAB uses matlab.net.http, which, unlike webwrite, hands
%   back the body of an error reply so that the server's message reaches you.
  if nargin < 4
    body = '';
  end
  % A connection struct may have been built by hand, with strings: checked again here.
  url = [mlbridge_check_url(conn.url) path];
  token = mlbridge_text(conn.token, 'the token');
  if exist('OCTAVE_VERSION', 'builtin')
    [status, text] = mlbridge_http_curl(url, token, method, body);
  else
    [status, text] = mlbridge_http_matlab(url, token, method, body);
  end
  if status < 200 || status >= 300
    raise_server_error(status, text, method, url);
  end
  reply = jsondecode(text);
end

function raise_server_error(status, text, method, url)
  [message, code] = server_message(text);
  if isempty(regexp(code, '^[A-Za-z]\w*$', 'once'))
    code = sprintf('HTTP%d', status);
  end
  error(['mlbridge:' code], 'mlbridge: %s (HTTP %d from %s %s)', ...
        message, status, method, url);
end

function [message, code] = server_message(text)
  % The server answers {"error": "...", "code": "..."}; anything else (a
  % proxy's HTML page, say) is shown as it came, shortened.
  message = strtrim(text);
  code = '';
  try
    parsed = jsondecode(text);
    if isstruct(parsed) && isfield(parsed, 'error')
      message = parsed.error;
      if isfield(parsed, 'code') && ischar(parsed.code)
        code = parsed.code;
      end
    end
  catch
  end
  if numel(message) > 500
    message = [message(1:500) '...'];
  end
  if isempty(message)
    message = 'the server sent an empty error reply';
  end
end
