function field = HeaderField(name, value)
%HEADERFIELD Test-only stand-in for matlab.net.http.HeaderField: a struct with Name, Value.
  field = struct('Name', name, 'Value', value);
end
