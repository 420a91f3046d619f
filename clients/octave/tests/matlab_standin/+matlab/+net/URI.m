function uri = URI(text)
%URI Test-only stand-in for matlab.net.URI: keeps the text.
  uri = struct('EncodedURI', text);
end
