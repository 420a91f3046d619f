function path = mlbridge_model_path(model, rest)
%MLBRIDGE_MODEL_PATH '/v2/models/MODEL' followed by REST, the name percent-encoded.
%   Model names come from users and from the server; encoded, no name can change the
%   route (a '/' or '?'), nor reach curl's config file as a control character.
  if nargin < 2
    rest = '';
  end
  bytes = double(unicode2native(mlbridge_text(model, 'MODEL'), 'UTF-8'));
  plain = (bytes >= 48 & bytes <= 57) | (bytes >= 65 & bytes <= 90) | ...
          (bytes >= 97 & bytes <= 122) | ismember(bytes, double('-._~'));
  parts = cell(1, numel(bytes));
  parts(plain) = cellstr(char(bytes(plain)).');
  parts(~plain) = arrayfun(@(b) sprintf('%%%02X', b), bytes(~plain), 'UniformOutput', false);
  path = ['/v2/models/' parts{:} rest];
end
