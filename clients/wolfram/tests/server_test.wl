(* Mathics3 script driven by test_wolfram_client.py: MLBridgeStartServer or MLBridgeStopServer
   (MLBRIDGE_TEST_ACTION) with "Command" -> MLBRIDGE_TEST_COMMAND, in MLBRIDGE_HOME. *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
command = Environment["MLBRIDGE_TEST_COMMAND"];

If[Environment["MLBRIDGE_TEST_ACTION"] === "start",
  started = MLBridgeStartServer["Command" -> command];
  emit["start-head", Head[started]];
  emit["start-url", started["URL"]];
  emit["start-models", MLBridgeModels[]],
  emit["stop", MLBridgeStopServer["Command" -> command]];
  emit["after-stop-code", MLBridgeModels[][[2]]["Code"]]];
