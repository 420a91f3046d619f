(* Mathics3 script driven by test_wolfram_client.py: the package against `mlbridge serve
   --tls-cert` with a self-signed certificate, reached through curl with the CA file (URLRead
   cannot take one). Prints "RESULT<TAB>key<TAB>value" lines. Environment: MLBRIDGE_HOME (the
   https server's home; its server.json names the certificate as "ca_file"),
   MLBRIDGE_TEST_PACKAGE, MLBRIDGE_TEST_OTHER_CA (a certificate that vouches for nothing here),
   MLBRIDGE_TEST_HTTP_URL and MLBRIDGE_TEST_HTTP_TOKEN (a plain http server of the same models). *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
codeMessage[result_] := If[Head[result] === Failure,
  {result[[2]]["Code"], result[[2]]["MessageTemplate"]}, result];
image = Table[N[Mod[i j, 7] / 7], {i, 28}, {j, 28}];

(* server.json's url and ca_file *)
tls = MLBridgeConnect[];
emit["connect", {tls["URL"], tls["CAFile"], tls["Sign"]}];
emit["box", {MLBridgePredict["box_volume", {2, 4, 8}], MLBridgeGradient["box_volume", {2, 4, 8}, 0.5,
  "Transport" -> "Text"], MLBridgeJacobian["box_volume", {2, 4, 8}]}];
emit["mnist-https", MLBridgePredict["mnist", image]];
emit["error", codeMessage[MLBridgePredict["mnist", {{1., 2.}}]]];
emit["signed", {MLBridgeConnect["Sign" -> True]["Sign"], MLBridgePredict["box_volume", {2, 4, 8}],
  MLBridgeGradient["box_volume", {1, 2, 3}]}];

(* an explicit URL with the CA file, and the certificate's other name *)
token = tls["TokenFile"];
emit["explicit", MLBridgeConnect[tls["URL"], "TokenFile" -> token, "CAFile" -> tls["CAFile"]]["URL"]];
localhost = StringReplace[tls["URL"], "127.0.0.1" -> "localhost"];
emit["localhost", MLBridgeConnect[localhost, "TokenFile" -> token, "CAFile" -> tls["CAFile"],
  "Sign" -> True]["URL"]];
emit["localhost-models", MLBridgeModels[]];

(* verification is never off: without the CA file, or with another, nothing is sent *)
emit["no-ca", With[{result = MLBridgeConnect["CAFile" -> None]},
  {result[[2]]["Code"], result[[2]]["MessageParameters"]["detail"]}]];
emit["other-ca", codeMessage[MLBridgeConnect["CAFile" -> Environment["MLBRIDGE_TEST_OTHER_CA"]]]];
emit["missing-ca", codeMessage[MLBridgeConnect["CAFile" -> tls["CAFile"] <> ".missing"]]];

(* the same model over plain http, for comparison *)
MLBridgeConnect[Environment["MLBRIDGE_TEST_HTTP_URL"], "TokenFile" -> Environment["MLBRIDGE_TEST_HTTP_TOKEN"]];
emit["mnist-http", MLBridgePredict["mnist", image]];
emit["done", True];
