function meta = mlbridge_metadata(conn, model)
%MLBRIDGE_METADATA Model MODEL's V2 metadata (GET /v2/models/MODEL), fetched once per session.
  persistent cache
  if isempty(cache)
    cache = containers.Map();
  end
  key = [conn.url '|' model];
  if ~isKey(cache, key)
    cache(key) = mlbridge_http(conn, 'GET', mlbridge_model_path(model));
  end
  meta = cache(key);
end
