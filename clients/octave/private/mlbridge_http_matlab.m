function [status, text] = mlbridge_http_matlab(url, token, method, body)
%MLBRIDGE_HTTP_MATLAB MATLAB transport: matlab.net.http, which returns error bodies too.
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
  options = matlab.net.http.HTTPOptions('ConvertResponse', false, 'ConnectTimeout', 10);
  response = request.send(matlab.net.URI(url), options);
  status = double(response.StatusCode);
  text = body_text(response.Body);
end

function text = body_text(body)
  text = '';
  if isempty(body)
    return;
  end
  data = body.Data;
  if isempty(data)
    data = body.Payload;
  end
  if isa(data, 'uint8')
    text = native2unicode(data(:).', 'UTF-8');
  else
    text = char(data);
  end
end
