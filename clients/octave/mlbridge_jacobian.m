function J = mlbridge_jacobian(model, x, conn)
%MLBRIDGE_JACOBIAN Jacobian of a served model at one example X.
%   J = MLBRIDGE_JACOBIAN(MODEL, X) is the Jacobian of model MODEL at the one
%   example X: J(k, i, j, ...) is d output(k) / d X(i, j, ...), size output
%   size + input size; for 'mnist' and a 28x28 image a 10 x 28 x 28 array.
%   For a scalar function ('box_volume', 'lj13') J is the gradient, with X's
%   size.
%
%   J = MLBRIDGE_JACOBIAN(MODEL, X, CONN) uses the connection CONN from
%   MLBRIDGE_CONNECT.
%
%   The rows come from one call of the model's gradient companion
%   (POST /v2/models/NAME.vjp/infer): X repeated once per output element,
%   with the unit cotangents. Errors as for MLBRIDGE_GRADIENT.
%
%   Example:
%     J = mlbridge_jacobian('mnist', img);   % 10 x 28 x 28
%     imagesc(squeeze(J(5, :, :)))          % d logit 4 / d pixel
  if nargin < 3
    conn = mlbridge_connect();
  end
  model = check_arguments(model, x);
  spec = mlbridge_input_spec(conn, model);
  grad = mlbridge_gradient_spec(conn, model);
  dims = mlbridge_wire_dims(spec, x);
  if dims(1) ~= 1
    error('mlbridge:usage', ['mlbridge_jacobian: X must be one example of model ''%s'' ', ...
          '(shape [%s]); got %s'], model, num2str(spec.shape(2:end)), mat2str(size(x)));
  end
  out = mlbridge_output_shape(conn, model, dims, x);
  count = prod(out);  % one row of the Jacobian per output element
  batch = repmat(mlbridge_row_major(x).', count, 1);
  inputs = [mlbridge_v2_tensor(spec.name, spec.datatype, [count dims(2:end)], batch), ',', ...
            mlbridge_v2_tensor(grad.cotangent, grad.cotangent_datatype, [count out], eye(count))];
  reply = mlbridge_http(conn, 'POST', mlbridge_model_path(grad.companion, '/infer'), ...
                        ['{"inputs":[' inputs ']}']);
  rows = mlbridge_v2_output(reply, grad.grad);
  J = mlbridge_from_row_major(mlbridge_v2_data(rows), [out dims(2:end)]);
  if isempty(out)
    J = reshape(J, size(x));  % a scalar function's Jacobian is its gradient
  end
end

function model = check_arguments(model, x)
  model = mlbridge_text(model, 'MODEL');
  if isempty(model)
    error('mlbridge:usage', 'mlbridge_jacobian: MODEL must be a model name, e.g. ''mnist''');
  end
  if ~(isnumeric(x) || islogical(x)) || ~isreal(x)
    error('mlbridge:usage', 'mlbridge_jacobian: X must be a real numeric array; got %s', class(x));
  end
end
