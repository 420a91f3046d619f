function spec = mlbridge_gradient_spec(conn, model)
%MLBRIDGE_GRADIENT_SPEC How to ask for MODEL's gradient: its V2 gradient companion.
%   SPEC has fields companion (the V2 model serving the vector-Jacobian
%   product, parameters.gradient in MODEL's metadata), cotangent and grad (the
%   companion's cotangent input and gradient output names) and
%   cotangent_datatype (that of MODEL's output). A model without a gradient
%   raises mlbridge:GradientUnavailable with the server's reason.
  meta = mlbridge_metadata(conn, model);
  parameters = struct();
  if isfield(meta, 'parameters') && isstruct(meta.parameters)
    parameters = meta.parameters;
  end
  if ~isfield(parameters, 'gradient')
    reason = 'the server names no gradient';
    if isfield(parameters, 'gradient_unavailable')
      reason = parameters.gradient_unavailable;
    end
    error('mlbridge:GradientUnavailable', 'mlbridge: model ''%s'' serves no gradient: %s', ...
          model, reason);
  end
  input = mlbridge_input_spec(conn, model);
  output = meta.outputs(1);
  spec = struct('companion', parameters.gradient, ...
                'cotangent', [output.name '_cotangent'], ...
                'grad', [input.name '_grad'], ...
                'cotangent_datatype', output.datatype);
end
