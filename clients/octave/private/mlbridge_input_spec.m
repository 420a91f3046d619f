function spec = mlbridge_input_spec(conn, model)
%MLBRIDGE_INPUT_SPEC Name, datatype and shape of MODEL's input, from its metadata (cached).
  meta = mlbridge_metadata(conn, model);
  if numel(meta.inputs) ~= 1
    error('mlbridge:usage', ...
          'mlbridge: model ''%s'' has %d inputs; this client sends exactly one', ...
          model, numel(meta.inputs));
  end
  input = meta.inputs(1);
  spec = struct('name', input.name, 'datatype', input.datatype, ...
                'shape', double(input.shape(:).'));
end
