function [status, text] = mlbridge_http_matlab(url, token, method, body)
%MLBRIDGE_HTTP_MATLAB MATLAB transport: matlab.net.http, which returns error bodies too.
%   UseProxy is off: the server is on this machine, and MATLAB's proxy setting
%   (on by default, from the system's) would send loopback requests, with the
%   secret, to the proxy. The reply is read from its raw bytes (SavePayload) as
%   UTF-8, what JSON is. A request that gets no reply raises
%   mlbridge:connection with MATLAB's reason, as the Octave branch does.
  header = [matlab.net.http.HeaderField('Authorization', ['Bearer ' token]), ...
            matlab.net.http.HeaderField('Accept', 'application/json')];
  request = matlab.net.http.RequestMessage(method, header);
  if ~isempty(body)
    request.Header = [request.Header, ...
                      matlab.net.http.field.ContentTypeField('application/json')];
    % Payload, not Data: the body is JSON text already and must go as is.
    request.Body = matlab.net.http.MessageBody();
    request.Body.Payload = unicode2native(body, 'UTF-8');
  end
  options = matlab.net.http.HTTPOptions('ConvertResponse', false, 'SavePayload', true, ...
                                        'UseProxy', false, 'ConnectTimeout', 10);
  try
    response = send(request, matlab.net.URI(url), options);
  catch err
    error('mlbridge:connection', 'mlbridge: %s %s failed: %s', method, url, err.message);
  end
  status = double(response.StatusCode);
  text = body_text(response.Body);
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
