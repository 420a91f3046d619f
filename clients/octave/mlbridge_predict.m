function logits = mlbridge_predict(model, x, conn)
%MLBRIDGE_PREDICT Run a served model on images; return its outputs (logits).
%   LOGITS = MLBRIDGE_PREDICT(MODEL, X) sends X to model MODEL (a name as in
%   MLBRIDGE_MODELS(), e.g. 'mnist') through the V2 endpoint
%   POST /v2/models/MODEL/infer and returns the output as an array.
%
%   Layout: X(n, row, col) is pixel (row, col) of image n, just as the model
%   sees [n][row][col]; a single image is a matrix IMG(row, col), i.e. what
%   imshow(IMG) shows upright.
%     28x28 matrix         one image   -> 1x10 row of logits
%     N x 28 x 28 array    N images    -> N x 10 matrix, row n for image n
%   MNIST models expect values in [0, 1] (divide uint8 pixels by 255).
%   MATLAB stores arrays column-major and the wire is row-major; the
%   conversion is done here, so never transpose images yourself.
%
%   LOGITS = MLBRIDGE_PREDICT(MODEL, X, CONN) uses the connection CONN from
%   MLBRIDGE_CONNECT instead of finding the local server. MODEL may be a char
%   vector or a string.
%
%   A request the server rejects (wrong shape, unknown model) raises an
%   error whose message is the server's explanation; its identifier is
%   mlbridge:HTTP<status>, e.g. mlbridge:HTTP400 (or mlbridge:<code> when
%   the server's reply names a code). A server that cannot prove it knows
%   the secret (a wrong token file, say) gets no request with it:
%   mlbridge:unproven.
%
%   Example:
%     logits = mlbridge_predict('mnist', img);
%     [~, k] = max(logits); digit = k - 1;
  if nargin < 3
    conn = mlbridge_connect();
  end
  model = check_arguments(model, x);
  spec = mlbridge_input_spec(conn, model);
  dims = mlbridge_wire_dims(spec, x);
  body = ['{"inputs":[' mlbridge_v2_tensor(spec.name, spec.datatype, dims, x) ']}'];
  reply = mlbridge_http(conn, 'POST', mlbridge_model_path(model, '/infer'), body);
  logits = mlbridge_v2_array(reply.outputs(1));
end

function model = check_arguments(model, x)
  model = mlbridge_text(model, 'MODEL');
  if isempty(model)
    error('mlbridge:usage', 'mlbridge_predict: MODEL must be a model name, e.g. ''mnist''');
  end
  if ~(isnumeric(x) || islogical(x)) || ~isreal(x)
    error('mlbridge:usage', ...
          'mlbridge_predict: X must be a real numeric array (28x28 or N x 28 x 28); got %s', ...
          class(x));
  end
end
