function out = mlbridge_from_row_major(data, shape)
%MLBRIDGE_FROM_ROW_MAJOR Row-major DATA of shape SHAPE as an array indexed OUT(i, j, ...).
%   A one-dimensional shape gives a row; an empty one a scalar.
  if numel(shape) <= 1
    out = data(:).';
  else
    out = permute(reshape(data, fliplr(shape)), numel(shape):-1:1);
  end
end
