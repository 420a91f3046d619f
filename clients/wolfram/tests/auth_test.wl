(* Mathics3 script driven by test_wolfram_client.py: what the package trusts with the secret,
   the server's proof, HMAC-SHA256 and signed requests. Prints "RESULT<TAB>key<TAB>value" lines.
   Environment: MLBRIDGE_HOME (the demo server's home), MLBRIDGE_TEST_PACKAGE,
   MLBRIDGE_TEST_TRUST (one home per case, named in MLBRIDGE_TEST_CASES, and loose-token, a
   token file others can read), MLBRIDGE_TEST_LIAR_URL and MLBRIDGE_TEST_STRANGER_URL (servers
   that cannot prove they know the secret), MLBRIDGE_TEST_RECORDER_URL (one that can), all
   three recording what they are sent, MLBRIDGE_TEST_FAKE_TOKEN (their secret's token file),
   MLBRIDGE_TEST_HMAC (a file: {{key bytes, message bytes}, ...}). *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
codeMessage[result_] := If[Head[result] === Failure,
  {result[[2]]["Code"], result[[2]]["MessageTemplate"]}, result];
fakeToken = Environment["MLBRIDGE_TEST_FAKE_TOKEN"];

(* ---- the home folder, server.json and the token file ------------------------------------- *)

trust = Environment["MLBRIDGE_TEST_TRUST"];
connectHome[home_String] := Block[{MLBridge`Private`homeDirectory},
  MLBridge`Private`homeDirectory[] := home;
  MLBridgeConnect[]];
Do[With[{result = connectHome[FileNameJoin[{trust, case}]]},
    emit["trust-" <> case, If[AssociationQ[result], result["URL"], codeMessage[result]]]],
  {case, StringSplit[Environment["MLBRIDGE_TEST_CASES"], ","]}];

server = MLBridgeConnect[];
emit["trust-loose-token", codeMessage[MLBridgeConnect[server["URL"],
  "TokenFile" -> FileNameJoin[{trust, "loose-token"}]]]];

(* ---- URLs --------------------------------------------------------------------------------- *)

emit["url-remote-http", codeMessage[MLBridgeConnect["http://example.org:8123", "TokenFile" -> fakeToken]]];
emit["url-userinfo", codeMessage[MLBridgeConnect["http://127.0.0.1@example.org/", "TokenFile" -> fakeToken]]];
emit["url-control", codeMessage[MLBridgeConnect["http://127.0.0.1:1/a" <> FromCharacterCode[10] <> "b",
  "TokenFile" -> fakeToken]]];
emit["url-scheme", codeMessage[MLBridgeConnect["file:///etc/passwd", "TokenFile" -> fakeToken]]];
emit["url-accepted", MLBridge`Private`urlProblem /@ {"http://127.0.0.1:8123", "http://127.3.2.1:1",
  "http://localhost:1/", "http://[::1]:8123", "http://[0:0:0:0:0:0:0:1]:1", "https://example.org",
  "https://example.org:8443/mlbridge"}];
emit["url-refused", StringQ /@ MLBridge`Private`urlProblem /@ {"http://128.0.0.1:1",
  "http://127.0.0.1.example.org:1", "http://[::2]:1", "http://example.org", "http://0.0.0.0:1",
  "https://", "ftp://127.0.0.1/"}];
emit["ca-file-on-http", codeMessage[MLBridgeConnect[server["URL"], "TokenFile" -> fakeToken,
  "CAFile" -> fakeToken]]];

(* ---- servers that cannot prove they know the secret never receive it --------------------- *)

emit["liar", codeMessage[MLBridgeConnect[Environment["MLBRIDGE_TEST_LIAR_URL"], "TokenFile" -> fakeToken]]];
emit["liar-signed", codeMessage[MLBridgeConnect[Environment["MLBRIDGE_TEST_LIAR_URL"],
  "TokenFile" -> fakeToken, "Sign" -> True]]];
emit["stranger", codeMessage[MLBridgeConnect[Environment["MLBRIDGE_TEST_STRANGER_URL"],
  "TokenFile" -> fakeToken]]];

(* ---- one proof per URL and secret; Bearer, then signed requests ------------------------------ *)

recorder = Environment["MLBRIDGE_TEST_RECORDER_URL"];
MLBridgeConnect[recorder, "TokenFile" -> fakeToken];
emit["recorder-bearer", MLBridgePredict["rank3", {1., 2.}, "Transport" -> "Text"]];
emit["recorder-signed", MLBridgeConnect[recorder, "TokenFile" -> fakeToken, "Sign" -> True]["Sign"]];
emit["recorder-signed-models", MLBridgeModels[]];
emit["recorder-signed-text", MLBridgePredict["rank3", {1., 2.}, "Transport" -> "Text"]];
emit["recorder-signed-wxf", MLBridgePredict["rank3", {1., 2.}]];

(* ---- signed requests to the real server ----------------------------------------------------- *)

signed = MLBridgeConnect["Sign" -> True];
emit["signed-connect", {signed["URL"], signed["Sign"]}];
emit["signed-box", {MLBridgePredict["box_volume", {2, 4, 8}], MLBridgeGradient["box_volume", {2, 4, 8}, 0.5],
  MLBridgeJacobian["box_volume", {2, 4, 8}, "Transport" -> "Text"]}];
emit["signed-models", MLBridgeModels[]];
emit["signed-error", codeMessage[MLBridgePredict["mnist", {{1., 2.}}]]];
(* A signature made with another secret (as if that server had proved it) is refused. *)
emit["signed-wrong-secret", Block[{MLBridge`Private`$connection = <|"URL" -> signed["URL"],
    "Token" -> "not-the-secret", "CAFile" -> None, "Sign" -> True|>},
  MLBridge`Private`markProven[signed["URL"], "not-the-secret"];
  With[{result = MLBridgeModels[]}, {result[[2]]["Status"], result[[2]]["MessageTemplate"]}]]];

(* ---- HMAC-SHA256 and SHA-256 on bytes, and the nonces --------------------------------------- *)

hmacCases = Get[Environment["MLBRIDGE_TEST_HMAC"]];
emit["hmac", MLBridge`Private`hexString[MLBridge`Private`hmacSHA256 @@ #] & /@ hmacCases];
emit["sha256", MLBridge`Private`sha256Hex[Last[#]] & /@ hmacCases];
emit["proof-reference", MLBridge`Private`expectedProof["s3cret", StringJoin[Table["00", {32}]]]];
emit["hmac-utf8", MLBridge`Private`hmacHex["s" <> FromCharacterCode[233] <> "cret" <>
  FromCharacterCode[31192], "mlbridge server proof v1"]];
emit["nonces", Table[MLBridge`Private`randomHex[], {3}]];
emit["done", True];
