function status = mlbridge_file_status(path)
%MLBRIDGE_FILE_STATUS Whether PATH is a symbolic link, its owner's uid and its mode, unfollowed.
%   Octave's lstat; MATLAB has none, and asks `ls -ldn` (MLBRIDGE_FILE_STATUS_LS).
%   A path that cannot be examined raises mlbridge:untrusted.
  if ~exist('OCTAVE_VERSION', 'builtin')
    status = mlbridge_file_status_ls(path);
    return;
  end
  [info, failed, reason] = lstat(path);
  if failed
    error('mlbridge:untrusted', 'mlbridge: cannot examine %s: %s', path, reason);
  end
  status = struct('link', S_ISLNK(info.mode), 'uid', info.uid, 'mode', info.mode);
end
