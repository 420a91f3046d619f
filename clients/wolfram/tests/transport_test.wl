(* Mathics3 script driven by test_wolfram_client.py: the package's transports and the risks of
   the documentation review, through the stand-ins. Prints "RESULT<TAB>key<TAB>value" lines.
   Environment: MLBRIDGE_HOME (the demo server's home), MLBRIDGE_TEST_PACKAGE,
   MLBRIDGE_TEST_IMAGE (image 8000 as a list), MLBRIDGE_TEST_WXF (<|name -> ByteArray|>: bytes
   written by wolframclient), MLBRIDGE_TEST_FAKE_URL and MLBRIDGE_TEST_FAKE_TOKEN (a scripted
   server that records what it is sent), MLBRIDGE_TEST_REPORT (a training report),
   MLBRIDGE_TEST_PYTHON and MLBRIDGE_TEST_OUT (a scratch folder). *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
failureFields[result_] := If[Head[result] === Failure,
  {result[[2]]["Status"], result[[2]]["Code"], result[[2]]["MessageTemplate"]}, result];
decode = MLBridge`Private`decodeReply;

(* ---- WXF, the default transport, against the live server ---------------------------------- *)

MLBridgeConnect[];
image = Get[Environment["MLBRIDGE_TEST_IMAGE"]];
emit["wxf-logits", MLBridgePredict["mnist", image]];
emit["text-logits", MLBridgePredict["mnist", image, "Transport" -> "Text"]];
emit["wxf-box", {MLBridgePredict["box_volume", {2, 4, 8}], MLBridgeGradient["box_volume", {2, 4, 8}],
  MLBridgeGradient["box_volume", {2, 4, 8}, 0.5], MLBridgeJacobian["box_volume", {2, 4, 8}]}];
golden = N[GoldenRatio];
ico = Normalize /@ Flatten[Table[RotateLeft[{0., s, t golden}, k], {k, 0, 2}, {s, {-1, 1}},
  {t, {-1, 1}}], 2];
start = Partition[Flatten[Prepend[1.1 ico, {0., 0., 0.}]] + 0.01 Sin[Range[39]], 3];
emit["lj13-start", start];
emit["wxf-lj13", {MLBridgePredict["lj13", start], MLBridgeGradient["lj13", start]}];
emit["wxf-mnist-jacobian-dimensions", Dimensions[MLBridgeJacobian["mnist", image]]];
emit["wxf-shape-error", failureFields[MLBridgePredict["mnist", {{1., 2.}}]]];
emit["wxf-unknown-model", failureFields[MLBridgePredict["no-such-model", image]]];

(* What the package puts on the wire, for wolframclient to read on the Python side. *)
emit["wxf-request-image", Normal[MLBridge`Private`encodeBody["WXF", "mnist", image]]];
emit["wxf-request-vjp", Normal[MLBridge`Private`encodeBody["WXF", "box_volume",
  <|"x" -> {2., 4., 8.}, "cotangent" -> 0.5|>]]];

(* What wolframclient writes, read the package's way (held, numbers only). *)
wxf = Get[Environment["MLBRIDGE_TEST_WXF"]];
emit["decode-golden-reply", decode["WXF", {200, wxf["golden-reply"]}]];
emit["decode-failure", failureFields[decode["WXF", {400, wxf["failure"]}]]];
emit["decode-rank3", decode["WXF", {200, wxf["rank3"]}]];
emit["decode-specials", decode["WXF", {200, wxf["specials"]}]];
emit["decode-scalar", decode["WXF", {200, wxf["scalar"]}]];
emit["decode-hostile", Head[decode["WXF", {200, wxf["hostile"]}]]];
emit["decode-hostile-array", Head[decode["WXF", {200, wxf["hostile-array"]}]]];
emit["decode-hostile-leaked", ValueQ[leaked]];
emit["decode-not-wxf", Head[decode["WXF", {200, ByteArray[{60, 104, 116, 109, 108, 62}]}]]];

(* The stand-in's BinarySerialize, byte for byte against wolframclient on the Python side. *)
emit["serialize-table", Normal[BinarySerialize[#]] & /@ {
  NumericArray[{{1.5, -2.}}, "Real32"],
  <|"x" -> NumericArray[{2., 4., 8.}, "Real64"], "cotangent" -> 0.5|>,
  Failure["MLBridge", <|"MessageTemplate" -> FromCharacterCode[233], "Status" -> 400|>],
  {1, 300, 70000, 2^40, -5, 2.5, "s"}}];

(* ---- text replies: any rank, NaN and infinities ------------------------------------------- *)

emit["text-rank3-specials", decode["Text", {200, "{{{1., Infinity}}, {{-Infinity, Indeterminate}}}"}]];
emit["text-rank4", Dimensions[decode["Text", {200, "{{{{1., 2.}}}}"}]]];
emit["text-scalar-nan", decode["Text", {200, "Indeterminate"}]];

(* ---- a scripted server: headers, charsets, foreign replies, trailing slashes ---------------- *)

fakeURL = Environment["MLBRIDGE_TEST_FAKE_URL"];
fakeToken = Environment["MLBRIDGE_TEST_FAKE_TOKEN"];
fake = MLBridgeConnect[fakeURL <> "//", "TokenFile" -> fakeToken];
emit["fake-connect-url", fake["URL"]];
emit["fake-labels-codes", ToCharacterCode /@ MLBridgeModelInfo["labels"]["Labels"]];
raw = URLRead[HTTPRequest[fakeURL <> "/v2/models/labels",
  <|"Headers" -> {"Authorization" -> "Bearer " <> StringTrim[Import[fakeToken, "Text"]]}|>],
  {"Body"}]["Body"];
emit["fake-body-labels-codes", ToCharacterCode /@ ImportString[raw, "RawJSON"]["parameters"]["labels"]];
emit["fake-rank3-text", MLBridgePredict["rank3", {1., 2.}, "Transport" -> "Text"]];
emit["fake-rank3-wxf", MLBridgePredict["rank3", {1., 2.}]];
emit["fake-utf8-error", ToCharacterCode[MLBridgePredict["utf8-error", {1., 2.}, "Transport" -> "Text"][[2]]["MessageTemplate"]]];
Print["MARK\tforeign replies start"];
emit["fake-html-json", failureFields[MLBridgeModelInfo["proxied"]]];
emit["fake-html-cas", failureFields[MLBridgePredict["rank3-proxied", {1., 2.}, "Transport" -> "Text"]]];
$InternetProxyRules = {"UseProxy" -> True, "HTTP" -> {"proxy.example", 3128}};
emit["fake-html-json-proxy", failureFields[MLBridgeModelInfo["proxied"]]];
emit["fake-unreachable-proxy", MLBridgeConnect["http://127.0.0.1:9", "TokenFile" -> fakeToken]];
$InternetProxyRules = {"UseProxy" -> Automatic};
Print["MARK\tforeign replies end"];

(* ---- no server: URLRead's $Failed and message, the package's Failure without a message ---- *)

emit["raw-unreachable", URLRead[HTTPRequest["http://127.0.0.1:9/v2", <||>], {"StatusCode"}]];
Print["MARK\tpackage unreachable start"];
emit["package-unreachable", failureFields[MLBridgeConnect["http://127.0.0.1:9", "TokenFile" -> fakeToken]][[2]]];
(* A server that went away during the session. *)
emit["package-unreachable-predict", Block[
  {MLBridge`Private`$connection = <|"URL" -> "http://127.0.0.1:9", "Token" -> "x",
    "CAFile" -> None, "Sign" -> False|>},
  MLBridgePredict["box_volume", {2., 4., 8.}, "Transport" -> "Text"][[2]]["Code"]]];
Print["MARK\tpackage unreachable end"];

(* ---- connection files that are not what `mlbridge serve` writes ------------------------------ *)

scratch = Environment["MLBRIDGE_TEST_OUT"];
Export[FileNameJoin[{scratch, "server.json"}], "{\"pid\": 1, \"token_file\": \"/nowhere\"}", "Text"];
RunProcess[{"chmod", "600", FileNameJoin[{scratch, "server.json"}]}];
RunProcess[{"chmod", "700", scratch}];
emit["no-url", Block[{MLBridge`Private`homeDirectory}, MLBridge`Private`homeDirectory[] := scratch;
  MLBridgeConnect[]]];
emit["bad-url", failureFields[MLBridgeConnect["127.0.0.1:8123", "TokenFile" -> fakeToken]]];
emit["bad-arguments", failureFields[MLBridgeConnect[8123]]];

(* ---- the server process on Windows: PYTHONPATH/PYTHONHOME emptied whatever the merge -------- *)

probe = "import os, sys; print(repr(os.environ.get('PYTHONPATH')), " <>
  "repr(os.environ.get('PYTHONHOME')), any('wolfram' in p for p in sys.path))";
windowsEnv = MLBridge`Private`serverEnvironment["Windows"];
windowsArgv = MLBridge`Private`serverCommand[Environment["MLBRIDGE_TEST_PYTHON"], {"-c", probe},
  windowsEnv, "Windows"];
emit["windows-argv-head", First[windowsArgv]];
emit["windows-child", StringTrim[RunProcess[windowsArgv,
  ProcessEnvironment -> Association @@ windowsEnv]["StandardOutput"]]];

(* ---- training curves from a report ------------------------------------------------------- *)

plot = MLBridgeTrainingPlot[Environment["MLBRIDGE_TEST_REPORT"]];
emit["plot-head", Head[plot]];
emit["plot-lines", Cases[plot, Line[points_] :> points, Infinity]];
noValidation = MLBridgeTrainingPlot[<|"history" -> Table[<|"epoch" -> e, "loss" -> 1. / e,
  "accuracy" -> 1. - 0.5 / e, "val_loss" -> Null, "val_accuracy" -> Null|>, {e, 3}]|>];
emit["plot-no-validation-lines", Length[Cases[noValidation, Line[_], Infinity]]];
emit["plot-missing-file", failureFields[MLBridgeTrainingPlot[FileNameJoin[{scratch, "none.json"}]]]];
emit["done", True];
