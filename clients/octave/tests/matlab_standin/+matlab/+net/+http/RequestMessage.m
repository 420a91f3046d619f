function request = RequestMessage(method, header)
%REQUESTMESSAGE Test-only stand-in for matlab.net.http.RequestMessage(METHOD, HEADER).
%   A struct with the documented properties the client sets: Method, Header, Body.
  request = struct('Method', method, 'Header', header, 'Body', []);
end
