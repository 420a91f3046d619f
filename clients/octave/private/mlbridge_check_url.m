function url = mlbridge_check_url(url)
%MLBRIDGE_CHECK_URL The server URL, without trailing slashes, if it is a loopback http(s) URL.
%   The server listens on this machine only, and the URL is written into curl's config file
%   (Octave) or handed to matlab.net.URI (MATLAB): a control character could add lines to
%   that file, another host would receive the secret. So only http(s)://127.x.x.x,
%   localhost or [::1], with an optional port and path, without white space, quotes,
%   backslashes or control characters, is accepted; anything else raises mlbridge:usage.
  url = mlbridge_text(url, 'the server URL');
  loopback = '^https?://(127(\.\d{1,3}){3}|localhost|\[::1\])(:\d{1,5})?(/[^\s"\\]*)?$';
  if any(url < 32 | url == 127) || isempty(regexp(url, loopback, 'once'))
    shown = url;
    shown(shown < 32 | shown == 127) = '?';
    error('mlbridge:usage', ['mlbridge: the server URL must be a loopback http(s) URL ', ...
          'such as http://127.0.0.1:8123, without spaces or control characters; got "%s"'], ...
          shown);
  end
  while url(end) == '/'
    url = url(1:end-1);
  end
end
