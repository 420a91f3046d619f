function field = ContentTypeField(value)
%CONTENTTYPEFIELD Test-only stand-in for matlab.net.http.field.ContentTypeField.
  field = struct('Name', 'Content-Type', 'Value', value);
end
