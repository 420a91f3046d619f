function json = mlbridge_v2_tensor(name, datatype, dims, x)
%MLBRIDGE_V2_TENSOR One V2 JSON input tensor: X sent row-major with shape DIMS.
%   FP64 numbers are written with 17 significant digits, so they arrive
%   exactly; other types with 9, which is exact for FP32.
  data = mlbridge_row_major(x);
  if strcmp(datatype, 'FP64')
    numbers = sprintf('%.17g,', data);
  else
    numbers = sprintf('%.9g,', data);
  end
  shape = sprintf('%d,', dims);
  json = ['{"name":' jsonencode(name) ',"datatype":' jsonencode(datatype), ...
          ',"shape":[' shape(1:end-1) '],"data":[' numbers(1:end-1) ']}'];
end
