function [status, text] = mlbridge_send(url, method, body, authorization, ca_file)
%MLBRIDGE_SEND One HTTP exchange through this interpreter's transport; the status and reply text.
%   BODY is bytes (empty: none); AUTHORIZATION the Authorization header's value (empty:
%   none); CA_FILE the PEM file an https server's certificate is verified against (empty:
%   the system's store). Octave's webwrite cannot send a raw JSON body, so Octave goes
%   through the system curl; MATLAB uses matlab.net.http.
  if exist('OCTAVE_VERSION', 'builtin')
    [status, text] = mlbridge_http_curl(url, method, body, authorization, ca_file);
  else
    [status, text] = mlbridge_http_matlab(url, method, body, authorization, ca_file);
  end
end
