(* Mathics3 script driven by test_wolfram_client.py: the paclet descriptor reads as a Paclet
   expression, and Needs["MLBridge`"] finds the package in the Kernel folder its Kernel
   extension names (what the paclet manager puts on the path). MLBRIDGE_TEST_PACLET: the
   paclet folder. *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];

paclet = Environment["MLBRIDGE_TEST_PACLET"];
emit["descriptor-head", Head[Get[FileNameJoin[{paclet, "PacletInfo.m"}]]]];
PrependTo[$Path, FileNameJoin[{paclet, "Kernel"}]];
Needs["MLBridge`"];
emit["loaded", MemberQ[$ContextPath, "MLBridge`"] && Length[DownValues[MLBridgePredict]] > 0];
