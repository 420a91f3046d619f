function mlbridge_verify_server(url, token, ca_file)
%MLBRIDGE_VERIFY_SERVER Make the server at URL prove it knows TOKEN before TOKEN is used there.
%   GET URL/v2/health/proof?nonce=N, without the secret, must answer {"proof": P} with
%   P = HMAC-SHA256(TOKEN, "mlbridge server proof v1\n" + N): whatever took over a dead
%   server's port, or a URL from a doctored file, learns nothing. A success is
%   remembered per (URL, TOKEN) for the session, so the check costs one request.
%   Anything else raises mlbridge:unproven; no reply at all, mlbridge:connection.
  persistent proven
  if isempty(proven)
    proven = containers.Map();
  end
  key = [url '|' mlbridge_sha256(token)];  % the secret itself is not kept here
  if isKey(proven, key)
    return;
  end
  nonce = mlbridge_random_hex(32);
  [status, text] = mlbridge_send([url '/v2/health/proof?nonce=' nonce], 'GET', [], '', ca_file);
  expected = mlbridge_hmac_sha256(token, ['mlbridge server proof v1' char(10) nonce]);
  if status ~= 200 || ~same_text(proof_in(text), expected)
    error('mlbridge:unproven', ['mlbridge: the server at %s could not prove it knows the ', ...
          'secret; not sending it (is this really your mlbridge server?)'], url);
  end
  proven(key) = true;
end

function proof = proof_in(text)
  proof = '';
  try
    reply = jsondecode(text);
    if isstruct(reply) && isscalar(reply) && isfield(reply, 'proof') && ischar(reply.proof)
      proof = reply.proof;
    end
  catch  % not JSON: no proof
  end
end

function same = same_text(a, b)
  % Every character is compared, whatever the first difference.
  same = numel(a) == numel(b) && sum(a ~= b) == 0;
end
