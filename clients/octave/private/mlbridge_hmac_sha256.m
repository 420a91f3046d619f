function mac = mlbridge_hmac_sha256(key, message)
%MLBRIDGE_HMAC_SHA256 Lowercase hex HMAC-SHA256 (RFC 2104) of MESSAGE under KEY.
%   KEY and MESSAGE are byte vectors (uint8; text is taken as its UTF-8 bytes).
%   Built on MLBRIDGE_SHA256 alone: neither Octave nor MATLAB has an HMAC built in.
  block = 64;  % SHA-256's block size in bytes
  key = as_bytes(key);
  if numel(key) > block
    key = hex_bytes(mlbridge_sha256(key));
  end
  key = [key zeros(1, block - numel(key), 'uint8')];
  inner = hex_bytes(mlbridge_sha256([bitxor(key, uint8(54)) as_bytes(message)]));  % ipad 0x36
  mac = mlbridge_sha256([bitxor(key, uint8(92)) inner]);                            % opad 0x5c
end

function bytes = as_bytes(value)
  if ischar(value)
    value = unicode2native(value, 'UTF-8');
  end
  bytes = uint8(value(:).');
end

function bytes = hex_bytes(hex)
  bytes = uint8(hex2dec(reshape(hex, 2, []).').');
end
