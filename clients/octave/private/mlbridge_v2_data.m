function data = mlbridge_v2_data(output)
%MLBRIDGE_V2_DATA A V2 output tensor's numbers in row-major order, checked against its shape.
  shape = double(output.shape(:).');
  data = output.data;
  if ~isvector(data)
    data = permute(data, ndims(data):-1:1);  % a nested reply, decoded column-major
  end
  data = double(data(:));
  if numel(data) ~= prod(shape)
    error('mlbridge:reply', 'mlbridge: output "%s" has %d values, but its shape [%s] needs %d', ...
          output.name, numel(data), num2str(shape), prod(shape));
  end
end
