function data = mlbridge_row_major(x)
%MLBRIDGE_ROW_MAJOR The elements of X in row-major (C) order, as a double column.
%   Octave and MATLAB store arrays column-major; reversing the dimensions
%   turns that into the row-major order of the V2 "data" field.
  data = permute(double(x), ndims(x):-1:1);
  data = data(:);
end
