function body = MessageBody()
%MESSAGEBODY Test-only stand-in for matlab.net.http.MessageBody: Data and Payload.
  body = struct('Data', [], 'Payload', uint8([]));
end
