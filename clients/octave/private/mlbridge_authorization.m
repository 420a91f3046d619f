function value = mlbridge_authorization(conn, method, url, body)
%MLBRIDGE_AUTHORIZATION The Authorization header's value for one request of CONN.
%   "Bearer <secret>", or with CONN.sign, a signature that keeps the secret off the
%   wire: "MLBridge-HMAC-SHA256 ts=T, nonce=N, body=B, sig=S", T the Unix time, N a
%   fresh nonce, B the SHA-256 of BODY (the exact bytes sent) and S the HMAC-SHA256
%   under the secret of "mlbridge request v1\nMETHOD\nTARGET\nT\nN\nB", TARGET the
%   request target (the URL's path and query) as on the request line.
  if ~conn.sign
    value = ['Bearer ' conn.token];
    return;
  end
  target = regexprep(url, '^https?://[^/]*', '');
  if isempty(target)
    target = '/';
  end
  ts = sprintf('%d', unix_time());
  nonce = mlbridge_random_hex(32);
  digest = mlbridge_sha256(body);
  lf = char(10);
  message = ['mlbridge request v1' lf upper(method) lf target lf ts lf nonce lf digest];
  value = sprintf('MLBridge-HMAC-SHA256 ts=%s, nonce=%s, body=%s, sig=%s', ts, nonce, ...
                  digest, mlbridge_hmac_sha256(conn.token, message));
end

function seconds = unix_time()
  if exist('OCTAVE_VERSION', 'builtin')
    seconds = floor(time());
  else
    seconds = floor(posixtime(datetime('now', 'TimeZone', 'UTC')));
  end
end
