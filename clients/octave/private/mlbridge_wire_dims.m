function [dims, single] = mlbridge_wire_dims(spec, x)
%MLBRIDGE_WIRE_DIMS The row-major shape X travels with, and whether X is one example.
%   X(n, i, j, ...) is element [n][i][j]... of the batch. An array with one
%   dimension fewer than the model's input is one example, sent as a batch of
%   one; so is a row or column vector of the right length for a model whose
%   examples are vectors (e.g. [2 4 8] for an input of shape [-1, 3]).
  dims = size(x);
  single = numel(spec.shape) == numel(dims) + 1;
  example = spec.shape(2:end);
  if numel(spec.shape) == 2 && isvector(x) && example(1) > 1 && numel(x) == example(1)
    dims = numel(x);
    single = true;
  end
  if single
    dims = [1 dims];
  end
end
