function digest = mlbridge_sha256(bytes)
%MLBRIDGE_SHA256 Lowercase hex SHA-256 of BYTES (a uint8 vector, or text taken as its bytes).
%   Octave's hash() digests a char array byte by byte; MATLAB has no hash(), and goes
%   through Java's MessageDigest.
  bytes = uint8(bytes(:).');
  if exist('OCTAVE_VERSION', 'builtin')
    digest = hash('sha256', char(bytes));
  else
    engine = java.security.MessageDigest.getInstance('SHA-256');
    raw = typecast(int8(engine.digest(typecast(bytes, 'int8'))), 'uint8');
    digest = lower(reshape(dec2hex(raw, 2).', 1, []));
  end
end
