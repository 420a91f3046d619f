function hex = mlbridge_random_hex(count)
%MLBRIDGE_RANDOM_HEX COUNT random bytes from the system's CSPRNG, as 2*COUNT lowercase hex digits.
%   /dev/urandom on Linux and macOS; elsewhere (MATLAB on Windows) Java's SecureRandom.
%   Never rand(): its stream is predictable, and these bytes are nonces.
  if exist('/dev/urandom', 'file')
    fid = fopen('/dev/urandom', 'r');
    bytes = fread(fid, count, 'uint8=>uint8');
    fclose(fid);
  elseif usejava('jvm')
    % generateSeed returns a new byte[] (nextBytes would fill a copy MATLAB discards).
    bytes = typecast(int8(java.security.SecureRandom().generateSeed(count)), 'uint8');
  else
    error('mlbridge:random', 'mlbridge: no source of secure random numbers (/dev/urandom or Java)');
  end
  if numel(bytes) ~= count
    error('mlbridge:random', 'mlbridge: read %d of %d random bytes', numel(bytes), count);
  end
  hex = lower(reshape(dec2hex(bytes, 2).', 1, []));
end
