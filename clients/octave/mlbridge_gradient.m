function dx = mlbridge_gradient(model, x, varargin)
%MLBRIDGE_GRADIENT Gradient of a served model's outputs at X, shaped like X.
%   DX = MLBRIDGE_GRADIENT(MODEL, X) is the gradient of the sum of model
%   MODEL's outputs at X (what Wolfram's NetPortGradient gives): for a scalar
%   function such as 'box_volume' or 'lj13' simply its gradient. X is one
%   example or a batch, laid out as for MLBRIDGE_PREDICT; DX has X's size.
%
%   DX = MLBRIDGE_GRADIENT(MODEL, X, DY) is the vector-Jacobian product
%   J(X)'*DY, the cotangent DY shaped like the outputs MLBRIDGE_PREDICT(MODEL, X)
%   gives: a 1x10 row for one MNIST image, an N x 10 matrix for N images, a
%   number for one example of a scalar function.
%
%   Either form takes a connection from MLBRIDGE_CONNECT as its last argument.
%   The request goes to the model's gradient companion, the V2 model named in
%   its metadata (parameters.gradient), through POST /v2/models/NAME.vjp/infer.
%   A model without a gradient raises mlbridge:GradientUnavailable with the
%   server's reason; a request the server rejects, mlbridge:<code> with its
%   message, as for MLBRIDGE_PREDICT.
%
%   Examples:
%     mlbridge_gradient('box_volume', [2 4 8])          % [32 16 8]
%     mlbridge_gradient('box_volume', [2 4 8], 0.5)     % [16 8 4]
%     saliency = mlbridge_gradient('mnist', img, [0 0 0 0 1 0 0 0 0 0]);  % d logit 4 / d img
  [dy, conn] = optional_arguments(varargin);
  model = check_arguments(model, x, dy);
  spec = mlbridge_input_spec(conn, model);
  grad = mlbridge_gradient_spec(conn, model);
  [dims, single] = mlbridge_wire_dims(spec, x);
  tensors = mlbridge_v2_tensor(spec.name, spec.datatype, dims, x);
  if ~isempty(dy)
    shape = [dims(1) mlbridge_output_shape(conn, model, dims, x)];
    check_cotangent(dy, shape, single);
    tensors = [tensors ',' mlbridge_v2_tensor(grad.cotangent, grad.cotangent_datatype, shape, dy)];
  end
  reply = mlbridge_http(conn, 'POST', mlbridge_model_path(grad.companion, '/infer'), ...
                        ['{"inputs":[' tensors ']}']);
  dx = reshape(mlbridge_v2_array(mlbridge_v2_output(reply, grad.grad)), size(x));
end

function [dy, conn] = optional_arguments(args)
  dy = [];
  conn = [];
  if ~isempty(args) && isstruct(args{end})
    conn = args{end};
    args(end) = [];
  end
  if numel(args) > 1
    error('mlbridge:usage', 'mlbridge_gradient: expected (MODEL, X[, DY][, CONN])');
  end
  if ~isempty(args)
    dy = args{1};
  end
  if isempty(conn)
    conn = mlbridge_connect();
  end
end

function model = check_arguments(model, x, dy)
  model = mlbridge_text(model, 'MODEL');
  if isempty(model)
    error('mlbridge:usage', 'mlbridge_gradient: MODEL must be a model name, e.g. ''box_volume''');
  end
  if ~(isnumeric(x) || islogical(x)) || ~isreal(x)
    error('mlbridge:usage', 'mlbridge_gradient: X must be a real numeric array; got %s', class(x));
  end
  if ~(isnumeric(dy) || islogical(dy)) || ~isreal(dy)
    error('mlbridge:usage', 'mlbridge_gradient: DY must be a real numeric array; got %s', ...
          class(dy));
  end
end

function check_cotangent(dy, shape, single)
  % Any layout with the right number of elements is accepted for a vector;
  % otherwise DY's size must be the outputs' (with or without the batch axis
  % of a single example), so that a transposed matrix is not misread.
  fits = numel(dy) == prod(shape) && (isvector(dy) || isequal(trimmed(size(dy)), trimmed(shape)) ...
         || (single && isequal(trimmed(size(dy)), trimmed(shape(2:end)))));
  if ~fits
    error('mlbridge:usage', ['mlbridge_gradient: DY must have the shape of the model''s ', ...
          'outputs for this X, [%s]; got %s'], num2str(shape), mat2str(size(dy)));
  end
end

function dims = trimmed(dims)
  % Dimensions without the trailing ones Octave adds or drops.
  while numel(dims) > 0 && dims(end) == 1
    dims(end) = [];
  end
end
