function out = mlbridge_v2_array(output)
%MLBRIDGE_V2_ARRAY A V2 output tensor as an array: OUT(n, i, ...) is element [n][i]...
%   A one-dimensional output is a row.
  out = mlbridge_from_row_major(mlbridge_v2_data(output), double(output.shape(:).'));
end
