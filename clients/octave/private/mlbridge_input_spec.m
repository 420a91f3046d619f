function spec = mlbridge_input_spec(conn, model)
%MLBRIDGE_INPUT_SPEC Name, datatype and shape of MODEL's input, from its metadata (cached).
  persistent cache
  if isempty(cache)
    cache = containers.Map();
  end
  key = [conn.url '|' model];
  if ~isKey(cache, key)
    meta = mlbridge_http(conn, 'GET', ['/v2/models/' model]);
    cache(key) = single_input(meta, model);
  end
  spec = cache(key);
end

function spec = single_input(meta, model)
  if numel(meta.inputs) ~= 1
    error('mlbridge:usage', ...
          'mlbridge_predict: model ''%s'' has %d inputs; this client sends exactly one', ...
          model, numel(meta.inputs));
  end
  input = meta.inputs(1);
  spec = struct('name', input.name, 'datatype', input.datatype, ...
                'shape', double(input.shape(:).'));
end
