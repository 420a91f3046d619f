(* Mathics3 script driven by test_wolfram_client.py: exercises the real MLBridge package against
   a running server through the stand-ins. Prints one "RESULT<TAB>key<TAB>value" line per check;
   the Python side asserts on them. Environment: MLBRIDGE_HOME (the server's home),
   MLBRIDGE_TEST_IMAGES (a file holding {images, labels}, images[[1]] being image 8000),
   MLBRIDGE_TEST_PACKAGE, MLBRIDGE_TEST_TESTDATA (the golden payloads, tests/testdata). *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
SetAttributes[timed, HoldAll];
timed[key_String, expr_] := Module[{t0 = AbsoluteTime[], value},
  value = expr; emit[key <> "-seconds", Round[AbsoluteTime[] - t0, 0.001]]; value];

{images, labels} = Get[Environment["MLBRIDGE_TEST_IMAGES"]];

connection = timed["connect", MLBridgeConnect[]];
emit["connect-url", connection["URL"]];
emit["models", MLBridgeModels[]];

info = MLBridgeModelInfo["mnist"];
emit["input-shape", First[info["Inputs"]]["Shape"]];
emit["output-shape", First[info["Outputs"]]["Shape"]];
emit["labels", info["Labels"]];

logits = timed["predict", MLBridgePredict["mnist", images, "Transport" -> "Text"]];
emit["logits-dimensions", Dimensions[logits]];
emit["logits-first", logits[[1]]];
emit["logits-one", MLBridgePredict["mnist", images[[1]], "Transport" -> "Text"]];

top = timed["classify", MLBridgeClassify["mnist", images, "Transport" -> "Text"]];
emit["predicted", Keys[{#}][[1]] & /@ top];
emit["expected", labels];
emit["probabilities", Values[{#}][[1]] & /@ top];
emit["top3-first", MLBridgeClassify["mnist", images[[1]], 3, "Transport" -> "Text"]];

wrongShape = MLBridgePredict["mnist", {{1., 2.}, {3., 4.}}, "Transport" -> "Text"];
emit["wrong-shape-head", Head[wrongShape]];
emit["wrong-shape-status", wrongShape[[2]]["Status"]];
emit["wrong-shape-code", wrongShape[[2]]["Code"]];
emit["wrong-shape-message", wrongShape[[2]]["MessageTemplate"]];

(* Golden payloads: the recorded text reply read the package's way (held, numbers only), and
   the package's own text encoding of image 8000, written out for the Python side to parse. *)
goldenFile[name_String] := FileNameJoin[{Environment["MLBRIDGE_TEST_TESTDATA"], name}];
emit["golden-reply-text", MLBridge`Private`decodeReply["Text",
  {200, Import[goldenFile["mnist-8000.reply.text"], "Text"]}]];
Export[FileNameJoin[{DirectoryName[Environment["MLBRIDGE_TEST_IMAGES"]], "image-8000.text"}],
  MLBridge`Private`encodeBody["Text", "mnist", MLBridge`Private`toArray["mnist", images[[1]]]],
  "Text"];

unknown = MLBridgePredict["no-such-model", images[[1]], "Transport" -> "Text"];
emit["unknown-model-status", unknown[[2]]["Status"]];

(* The original design: no header, the secret as the body's first line, then list text. *)
secret = StringTrim[Import[connection["TokenFile"], "Text"]];
original = URLRead[HTTPRequest[connection["URL"] <> "/mnist", <|"Method" -> "POST",
  "Body" -> secret <> "\n" <> ToString[images[[1]], InputForm]|>], {"StatusCode", "Body"}];
emit["original-status", original["StatusCode"]];
emit["original-logits", ToExpression[original["Body"]]];

(* A wrong secret: the server cannot prove it knows it, so it is never sent. *)
wrongTokenFile = FileNameJoin[{Environment["MLBRIDGE_HOME"], "wrong-token"}];
Export[wrongTokenFile, "not-the-secret", "Text"];
RunProcess[{"chmod", "600", wrongTokenFile}];
wrongToken = MLBridgeConnect[connection["URL"], "TokenFile" -> wrongTokenFile];
emit["wrong-token-code", wrongToken[[2]]["Code"]];
emit["wrong-token-message", wrongToken[[2]]["MessageTemplate"]];
(* Sent anyway (as if proved), it gets the server's 401 back as a Failure. *)
emit["wrong-token-status", Block[{MLBridge`Private`$proven = <||>,
    MLBridge`Private`$connection = <|"URL" -> connection["URL"], "Token" -> "not-the-secret",
      "CAFile" -> None, "Sign" -> False|>},
  MLBridge`Private`markProven[connection["URL"], "not-the-secret"];
  MLBridgeModels[][[2]]["Status"]]];

noServer = MLBridgeConnect["http://127.0.0.1:9", "TokenFile" -> connection["TokenFile"]];
emit["no-server-code", noServer[[2]]["Code"]];
emit["no-server-message", noServer[[2]]["MessageTemplate"]];
emit["no-server-command", noServer[[2]]["MessageParameters"]["command"]];

(* A reply that is code, not numbers, must come back as a Failure without being evaluated. *)
hostile = MLBridge`Private`decodeReply["Text", {200, "{(leaked = 1.)}"}];
emit["hostile-head", Head[hostile]];
emit["hostile-leaked", ValueQ[leaked]];
hostileFailure = MLBridge`Private`decodeReply["Text",
  {400, "Failure[\"MLBridge\", <|\"MessageTemplate\" -> \"m\", \"Status\" -> (leaked = 400)|>]"}];
emit["hostile-failure-status", hostileFailure[[2]]["Status"]];
emit["hostile-failure-leaked", ValueQ[leaked]];

(* What MLBridgeStartServer would run: the Python side runs it and inspects the environment. *)
emit["server-argv", MLBridge`Private`serverCommand["mlbridge", {"serve"},
  MLBridge`Private`cleanEnvironment[]]];
