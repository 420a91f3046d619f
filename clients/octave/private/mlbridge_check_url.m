function url = mlbridge_check_url(url)
%MLBRIDGE_CHECK_URL The server URL, without trailing slashes, if the secret may go there.
%   The URL is written into curl's config file (Octave) or handed to matlab.net.URI
%   (MATLAB): a control character could add lines to that file. So only http(s)://HOST,
%   with an optional port and path of printable ASCII without white space, quotes,
%   backslashes, '?' or '#', is accepted. http only on this machine (127.x.x.x, localhost
%   or [::1]): elsewhere the secret would cross the network in clear, so another host
%   takes https (whose certificate curl or MATLAB verify). Anything else: mlbridge:usage.
  url = mlbridge_text(url, 'the server URL');
  shape = ['^(?<scheme>https?)://(?<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?', ...
           '(/[-A-Za-z0-9._~!$&()*+,;=:@%/]*)?$'];
  parts = regexp(url, shape, 'names', 'once');
  if isempty(parts) || any(url < 33 | url > 126)
    shown = url;
    shown(shown < 32 | shown == 127) = '?';
    error('mlbridge:usage', ['mlbridge: the server URL must be an http(s) URL such as ', ...
          'http://127.0.0.1:8123, of printable ASCII without spaces, quotes or control ', ...
          'characters; got "%s"'], shown);
  end
  if strcmpi(parts.scheme, 'http') && ~is_loopback(lower(parts.host))
    error('mlbridge:usage', ['mlbridge: %s is not on this machine; use https for a ', ...
          'remote server (http only on 127.0.0.1, localhost or [::1])'], url);
  end
  while url(end) == '/'
    url = url(1:end-1);
  end
end

function yes = is_loopback(host)
  yes = strcmp(host, 'localhost') || strcmp(host, '[::1]') || ...
        ~isempty(regexp(host, '^127(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$', 'once'));
end
