function output = mlbridge_v2_output(reply, name)
%MLBRIDGE_V2_OUTPUT The output called NAME in a V2 infer reply.
  outputs = reply.outputs;
  if ~iscell(outputs)  % jsondecode gives a cell only when outputs differ in fields
    outputs = num2cell(outputs);
  end
  names = cellfun(@(output) output.name, outputs, 'UniformOutput', false);
  found = find(strcmp(names, name), 1);
  if isempty(found)
    error('mlbridge:reply', 'mlbridge: the reply has no output "%s"; it has %s', ...
          name, strjoin(names, ', '));
  end
  output = outputs{found};
end
