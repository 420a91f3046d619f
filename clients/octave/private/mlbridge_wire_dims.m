function [dims, single] = mlbridge_wire_dims(spec, x)
%MLBRIDGE_WIRE_DIMS The row-major shape X travels with, and whether X is one example.
%   X(n, i, j, ...) is element [n][i][j]... of the batch. An array with one
%   dimension fewer than the model's input is one example, sent as a batch of
%   one; so is a row or column vector of the right length for a model whose
%   examples are vectors (e.g. [2 4 8] for an input of shape [-1, 3]).
%   MATLAB and Octave drop trailing singleton dimensions (a 28x28x1 array is
%   28x28) and give even a scalar two: X's size is padded with ones to the
%   model's rank when that makes it fit, so one 28x28 image goes to a
%   [-1, 28, 28, 1] model as [1, 28, 28, 1] and N of them as [N, 28, 28, 1],
%   and a number or a vector goes to a [-1] model as one example or a batch.
  rank = numel(spec.shape);
  example = spec.shape(2:end);
  dims = size(x);
  if rank == 1  % examples are scalars: x holds a batch of them, or one
    single = isscalar(x);
    dims = numel(x);
    return;
  end
  if rank == 2 && isvector(x) && example(1) > 1 && numel(x) == example(1)
    [dims, single] = deal([1 numel(x)], true);
  elseif fits(padded(dims, rank - 1), example)
    [dims, single] = deal([1 padded(dims, rank - 1)], true);
  elseif fits(padded(dims, rank), spec.shape)
    [dims, single] = deal(padded(dims, rank), false);
  else  % no reading fits: send it as it is, and let the server say what it expected
    single = rank == numel(dims) + 1;
    dims = [ones(1, single) dims];
  end
end

function dims = padded(dims, rank)
  % DIMS with trailing ones up to RANK; unchanged when it is longer, or a trailing
  % dimension other than one would have to be dropped.
  while numel(dims) > rank && dims(end) == 1
    dims(end) = [];
  end
  dims = [dims ones(1, rank - numel(dims))];
end

function ok = fits(dims, shape)
  ok = numel(dims) == numel(shape) && all(shape < 0 | dims == shape);
end
