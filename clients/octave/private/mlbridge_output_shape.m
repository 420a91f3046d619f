function shape = mlbridge_output_shape(conn, model, dims, x)
%MLBRIDGE_OUTPUT_SHAPE One example's output shape (row-major), for input X sent with shape DIMS.
%   From MODEL's metadata; when that leaves a dimension open, from the
%   model's own answer at X.
  meta = mlbridge_metadata(conn, model);
  shape = double(meta.outputs(1).shape(:).');
  shape = shape(2:end);
  if any(shape < 0)
    spec = mlbridge_input_spec(conn, model);
    body = ['{"inputs":[' mlbridge_v2_tensor(spec.name, spec.datatype, dims, x) ']}'];
    reply = mlbridge_http(conn, 'POST', mlbridge_model_path(model, '/infer'), body);
    shape = double(reply.outputs(1).shape(:).');
    shape = shape(2:end);
  end
end
