function status = mlbridge_file_status_ls(path)
%MLBRIDGE_FILE_STATUS_LS MLBRIDGE_FILE_STATUS through POSIX `ls -ldn`, for MATLAB.
%   `ls -ldn` prints the mode as letters ("drwx------"), then the link count and the
%   owner's numeric uid, on Linux and macOS alike; it describes a symbolic link itself.
  quoted = ['''' strrep(path, '''', '''\''''') ''''];
  [rc, out] = system(['LC_ALL=C ls -ldn -- ' quoted ' 2>&1']);
  fields = regexp(out, '^([-bcdlps])([-rwxsStT]{9})\S*\s+\d+\s+(\d+)\s', 'tokens', 'once');
  if rc ~= 0 || isempty(fields)
    error('mlbridge:untrusted', 'mlbridge: cannot examine %s: %s', path, strtrim(out));
  end
  status = struct('link', fields{1} == 'l', 'uid', str2double(fields{3}), ...
                  'mode', permission_bits(fields{2}));
end

function mode = permission_bits(letters)
  % "rwxr-x--x" -> octal 751; s/S and t/T add setuid, setgid and sticky (with or
  % without the execute bit under them).
  mode = 0;
  for k = 1:9
    if any(letters(k) == 'rwxst')
      mode = mode + 2^(9 - k);
    end
  end
  special = [2048 1024 512];  % octal 4000 2000 1000, for the x of user, group, others
  for k = 1:3
    if any(letters(3 * k) == 'sStT')
      mode = mode + special(k);
    end
  end
end
