function reply = mlbridge_http(conn, method, path, body)
%MLBRIDGE_HTTP Send one request with the secret; return the decoded JSON reply.
%   The first request to a server with a secret waits for the server's proof that it
%   knows the secret (MLBRIDGE_VERIFY_SERVER); then the secret goes as a Bearer token,
%   or, with CONN.sign, only as a signature (MLBRIDGE_AUTHORIZATION). BODY is JSON text,
%   sent as its UTF-8 bytes.
  if nargin < 4
    body = '';
  end
  conn = checked(conn);
  url = [conn.url path];
  bytes = unicode2native(body, 'UTF-8');
  mlbridge_verify_server(conn.url, conn.token, conn.ca_file);
  authorization = mlbridge_authorization(conn, method, url, bytes);
  [status, text] = mlbridge_send(url, method, bytes, authorization, conn.ca_file);
  if status < 200 || status >= 300
    raise_server_error(status, text, method, url);
  end
  reply = jsondecode(text);
end

function conn = checked(conn)
  % A connection struct may have been built by hand, with strings and without the
  % optional fields: checked, and completed, again here.
  conn.url = mlbridge_check_url(conn.url);
  conn.token = mlbridge_text(conn.token, 'the token');
  if ~isfield(conn, 'ca_file') || isempty(conn.ca_file)
    conn.ca_file = '';
  end
  conn.ca_file = mlbridge_text(conn.ca_file, 'the CA file');
  conn.sign = isfield(conn, 'sign') && isequal(conn.sign, true);
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
