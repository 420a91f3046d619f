function mlbridge_check_private(path, kind)
%MLBRIDGE_CHECK_PRIVATE Refuse a file or folder that others could have planted or read.
%   KIND 'folder' (the mlbridge home): not a symbolic link, the user's own, not
%   writable by group or others. KIND 'file' (server.json, the token file): not a
%   symbolic link, the user's own, no group or other permission bits at all. Whoever
%   could write these could point the client, and its secret, at a server of their
%   own. Raises mlbridge:untrusted naming the path and the fix. Windows has no such
%   modes: nothing is checked there.
  if ispc()
    return;
  end
  status = mlbridge_file_status(path);
  if status.link
    refuse('%s is a symbolic link; refusing to trust it with secrets', path);
  end
  if status.uid ~= current_uid()
    refuse('%s belongs to another user; refusing to trust it with secrets', path);
  end
  mode = bitand(status.mode, 4095);  % permission bits, octal 7777
  if strcmp(kind, 'folder') && bitand(mode, 18)  % octal 022: group or others may write
    refuse('%s is writable by others (mode %o); run: chmod go-w %s', path, mode, path);
  elseif strcmp(kind, 'file') && bitand(mode, 63)  % octal 077: any group or other bit
    refuse('%s is open to others (mode %o); run: chmod 600 %s', path, mode, path);
  end
end

function uid = current_uid()
  if exist('getuid', 'builtin')  % Octave
    uid = getuid();
  else
    [rc, out] = system('id -u');
    uid = str2double(out);
    if rc ~= 0 || isnan(uid)
      error('mlbridge:untrusted', 'mlbridge: cannot tell the current user (id -u failed)');
    end
  end
end

function refuse(varargin)
  error('mlbridge:untrusted', ['mlbridge: ' varargin{1}], varargin{2:end});
end
