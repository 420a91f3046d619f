function response = send(request, uri, options)
%SEND Test-only stand-in for the matlab.net.http.RequestMessage send method, through curl.
%   Sends REQUEST's method, header fields and Body.Payload to URI; with options.UseProxy
%   false no proxy is used (with true, curl's proxy variables apply); a CertificateFilename
%   other than the documented 'default' is curl's cacert, the PEM file https is verified
%   with. A request that gets no reply raises an error, as MATLAB's send throws
%   matlab.net.http.HTTPException (the identifier here is the stand-in's). The response
%   has StatusCode and Body.Payload (the raw bytes, kept when options.SavePayload is true)
%   and Body.Data (empty unless ConvertResponse). The options it was given are kept in
%   MLBRIDGE_STANDIN_OPTIONS.
  setappdata(0, 'MLBRIDGE_STANDIN_OPTIONS', options);
  folder = tempname();
  mkdir(folder);
  cleanup = onCleanup(@() remove_folder(folder));
  lines = {sprintf('url = "%s"', uri.EncodedURI), sprintf('request = "%s"', request.Method), ...
           sprintf('output = "%s/reply"', folder), 'write-out = "%{http_code}"', ...
           sprintf('connect-timeout = "%d"', options.ConnectTimeout)};
  if ~options.UseProxy
    lines{end + 1} = 'noproxy = "*"';
  end
  if ~strcmp(options.CertificateFilename, 'default')
    lines{end + 1} = sprintf('cacert = "%s"', options.CertificateFilename);
  end
  for field = request.Header
    lines{end + 1} = sprintf('header = "%s: %s"', field.Name, field.Value);
  end
  if ~isempty(request.Body) && ~isempty(request.Body.Payload)
    fid = fopen(fullfile(folder, 'body'), 'w');
    fwrite(fid, request.Body.Payload, 'uint8');
    fclose(fid);
    lines(end + 1:end + 2) = {'header = "Expect:"', sprintf('data-binary = "@%s/body"', folder)};
  end
  fid = fopen(fullfile(folder, 'config'), 'w');
  fprintf(fid, '%s\n', lines{:});
  fclose(fid);
  [rc, out] = system(sprintf('curl -sS -K "%s/config" 2>/dev/null', folder));
  if rc ~= 0
    error('mlbridgetest:HTTPException', 'Could not connect to %s (curl exit %d)', ...
          uri.EncodedURI, rc);
  end
  payload = uint8([]);
  if exist(fullfile(folder, 'reply'), 'file')
    fid = fopen(fullfile(folder, 'reply'), 'r');
    payload = uint8(fread(fid, Inf, 'uint8=>uint8').');
    fclose(fid);
  end
  if ~options.SavePayload
    payload = uint8([]);
  end
  response = struct('StatusCode', str2double(out), ...
                    'Body', struct('Data', [], 'Payload', payload));
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
