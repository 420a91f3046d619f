function [status, text] = mlbridge_http_matlab(url, method, body, authorization, ca_file)
%MLBRIDGE_HTTP_MATLAB MATLAB transport: matlab.net.http, which returns error bodies too.
%   Sends BODY (bytes; empty: none) with "Authorization: AUTHORIZATION" (none when
%   empty). An https server's certificate is verified against the PEM file CA_FILE
%   (HTTPOptions CertificateFilename), or MATLAB's own store when it is empty; an
%   empty CertificateFilename would switch verification off, so it is never passed.
%   UseProxy is off for a server on this machine: MATLAB's proxy setting (on by
%   default, from the system's) would send loopback requests, with the secret, to the
%   proxy. The reply is read from its raw bytes (SavePayload) as UTF-8, what JSON is.
%   A request that gets no reply raises mlbridge:connection with MATLAB's reason, as
%   the Octave branch does.
  header = matlab.net.http.HeaderField('Accept', 'application/json');
  if ~isempty(authorization)
    header = [matlab.net.http.HeaderField('Authorization', authorization), header];
  end
  request = matlab.net.http.RequestMessage(method, header);
  if ~isempty(body)
    request.Header = [request.Header, ...
                      matlab.net.http.field.ContentTypeField('application/json')];
    % Payload, not Data: the body is JSON bytes already and must go as is.
    request.Body = matlab.net.http.MessageBody();
    request.Body.Payload = uint8(body);
  end
  settings = {'ConvertResponse', false, 'SavePayload', true, 'ConnectTimeout', 10};
  if is_local(url)
    settings = [settings, {'UseProxy', false}];
  end
  if ~isempty(ca_file)
    settings = [settings, {'CertificateFilename', ca_file}];
  end
  options = matlab.net.http.HTTPOptions(settings{:});
  try
    response = send(request, matlab.net.URI(url), options);
  catch err
    error('mlbridge:connection', 'mlbridge: %s %s failed: %s', method, url, err.message);
  end
  status = double(response.StatusCode);
  text = body_text(response.Body);
end

function yes = is_local(url)
  % http URLs are on this machine (mlbridge_check_url); an https one may be too.
  yes = strncmp(url, 'http://', 7) || ...
        ~isempty(regexp(url, '^https://(127\.[\d.]+|localhost|\[::1\])(:\d+)?(/|$)', 'once'));
end

function text = body_text(body)
  text = '';
  if isempty(body)
    return;
  end
  data = body.Payload;
  if isempty(data)
    data = body.Data;
  end
  if isa(data, 'uint8')
    text = native2unicode(data(:).', 'UTF-8');
  else
    text = char(data);
  end
end
