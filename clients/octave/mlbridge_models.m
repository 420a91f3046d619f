function out = mlbridge_models(varargin)
%MLBRIDGE_MODELS List the served models, or describe one.
%   NAMES = MLBRIDGE_MODELS() returns the names of the models the server
%   serves, as a cell row of strings, e.g. {'mnist', 'mnist-cnn'}.
%
%   META = MLBRIDGE_MODELS(NAME) returns model NAME's V2 metadata as a
%   struct: name, platform, inputs and outputs (each with name, datatype,
%   shape) and parameters (e.g. parameters.labels).
%
%   Either form takes a connection from MLBRIDGE_CONNECT as its last
%   argument; without one, the local server is found through MLBRIDGE_HOME.
%   NAME may be a char vector or a string.
  args = varargin;
  conn = [];
  if ~isempty(args) && isstruct(args{end})
    conn = args{end};
    args(end) = [];
  end
  if isempty(conn)
    conn = mlbridge_connect();
  end
  if isempty(args)
    reply = mlbridge_http(conn, 'GET', '/v2/models');
    out = model_names(reply);
  else
    out = mlbridge_http(conn, 'GET', mlbridge_model_path(args{1}));
  end
end

function names = model_names(reply)
  names = {};
  if isfield(reply, 'models') && ~isempty(reply.models)
    models = reply.models;
    if iscell(models)  % jsondecode gives a cell when entries differ in fields
      names = cellfun(@(m) m.name, models(:).', 'UniformOutput', false);
    else
      names = {models.name};
    end
  end
end
