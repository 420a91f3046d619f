function [status, text] = mlbridge_http_curl(url, method, body, authorization, ca_file)
%MLBRIDGE_HTTP_CURL Octave transport: the system curl, the secret kept off its command line.
%   Sends BODY (bytes; empty: none) with the header "Authorization: AUTHORIZATION"
%   (none when empty); an https server's certificate is verified against the PEM file
%   CA_FILE, or the system's store when it is empty. Everything curl needs (URL,
%   headers, file names) goes into a config file in a fresh directory only this user
%   can read, so `ps` shows nothing but `curl -sS -K <file>` to other users.
  folder = private_tempdir();
  cleanup = onCleanup(@() remove_folder(folder));
  files = struct('config', fullfile(folder, 'curl.cfg'), ...
                 'body', fullfile(folder, 'body.json'), ...
                 'reply', fullfile(folder, 'reply.json'), ...
                 'stderr', fullfile(folder, 'stderr.txt'));
  write_file(files.config, curl_config(url, method, ~isempty(body), authorization, ca_file, files));
  if ~isempty(body)
    write_file(files.body, body);
  end
  [rc, out] = system(sprintf('curl -sS -K "%s" 2>"%s"', files.config, files.stderr));
  if rc ~= 0
    error('mlbridge:connection', 'mlbridge: %s %s failed (curl exit %d): %s', ...
          method, url, rc, curl_complaint(rc, files.stderr));
  end
  status = str2double(strtrim(out));
  text = '';
  if exist(files.reply, 'file')
    text = fileread(files.reply);
  end
end

function config = curl_config(url, method, has_body, authorization, ca_file, files)
  % path-as-is: the request target goes out exactly as signed (no dot-segment removal).
  lines = {option('url', url), option('request', method)};
  if ~isempty(authorization)
    lines{end + 1} = option('header', ['Authorization: ' authorization]);
  end
  lines = [lines, {option('header', 'Accept: application/json'), ...
                   option('output', files.reply), option('write-out', '%{http_code}'), ...
                   option('connect-timeout', '10'), ...
                   option('noproxy', '127.0.0.1,localhost,::1'), 'globoff', 'path-as-is'}];
  if ~isempty(ca_file)
    lines{end + 1} = option('cacert', ca_file);
  end
  if has_body
    % --data-binary keeps the bytes as written; "Expect:" avoids curl's
    % 100-continue pause on bodies above 1 MiB.
    lines = [lines, {option('header', 'Content-Type: application/json'), ...
                     option('header', 'Expect:'), ...
                     option('data-binary', ['@' files.body])}];
  end
  config = sprintf('%s\n', lines{:});
end

function line = option(name, value)
  % One `name = "value"` line. The URL and the secret were checked before; a control
  % character could only come from a bug here, and would start a config line of its own.
  if any(value < 32 | value == 127)
    error('mlbridge:usage', 'mlbridge: refusing a control character in curl''s %s option', name);
  end
  value = strrep(value, '\', '\\');
  value = strrep(value, '"', '\"');
  line = sprintf('%s = "%s"', name, value);
end

function folder = private_tempdir()
  old = umask(77);  % octal 077: the folder is 0700, so its files are private
  folder = tempname();
  [ok, message] = mkdir(folder);
  umask(old);
  if ~ok
    error('mlbridge:tempdir', 'mlbridge: cannot create %s: %s', folder, message);
  end
end

function write_file(path, data)
  fid = fopen(path, 'w');
  if fid < 0
    error('mlbridge:tempdir', 'mlbridge: cannot write %s', path);
  end
  fwrite(fid, data, 'uint8');
  fclose(fid);
end

function complaint = curl_complaint(rc, stderr_file)
  % curl's first line of complaint, and what to do about the common ones.
  complaint = '';
  if exist(stderr_file, 'file')
    complaint = strtrim(strtok(fileread(stderr_file), char(10)));
  end
  if rc == 127 || isempty(complaint)
    complaint = [complaint ' (is curl installed and on the PATH?)'];
  elseif rc == 60 || rc == 77  % the certificate is not trusted; the CA file is unusable
    complaint = [complaint '; give the server''s certificate (PEM) as mlbridge_connect''s ', ...
                 '''CAFile'' option'];
  end
end

function remove_folder(folder)
  entries = dir(folder);
  for k = 1:numel(entries)
    if ~entries(k).isdir
      delete(fullfile(folder, entries(k).name));
    end
  end
  rmdir(folder);
end
