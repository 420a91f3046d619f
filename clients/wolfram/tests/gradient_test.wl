(* Mathics3 script driven by test_wolfram_client.py: MLBridgeGradient, MLBridgeJacobian and
   MLBridgeFunction against a running server through the stand-ins, with the text transport.
   Prints one "RESULT<TAB>key<TAB>value" line per check and saves big arrays as InputForm text
   in MLBRIDGE_TEST_OUT/<key>.m for the Python side to parse. Environment: MLBRIDGE_HOME (the
   demo server's home), MLBRIDGE_TEST_IMAGES (a file holding a list of images, the first being
   image 8000), MLBRIDGE_TEST_PACKAGE, MLBRIDGE_TEST_OUT, and MLBRIDGE_TEST_NOGRAD_URL and
   MLBRIDGE_TEST_NOGRAD_TOKEN (a second server whose model 'linear-lite' has no gradient). *)

Get[FileNameJoin[{DirectoryName[$InputFileName], "standin.wl"}]];
Get[Environment["MLBRIDGE_TEST_PACKAGE"]];

emit[key_String, value_] := Print["RESULT\t", key, "\t", ToString[value, InputForm]];
save[key_String, body_String] :=
  Export[FileNameJoin[{Environment["MLBRIDGE_TEST_OUT"], key <> ".m"}], body, "Text"];
save[key_String, value_] := save[key, ToString[value, InputForm]];
text = "Transport" -> "Text";

(* ---- box_volume: exact numbers ---------------------------------------------------------- *)

emit["box-gradient", MLBridgeGradient["box_volume", {2, 4, 8}, text]];
emit["box-gradient-batch", MLBridgeGradient["box_volume", {{2, 4, 8}, {1, 2, 3}}, text]];
emit["box-vjp", MLBridgeGradient["box_volume", {2., 4., 8.}, 2., text]];
emit["box-vjp-batch", MLBridgeGradient["box_volume", {{2, 4, 8}, {1, 2, 3}}, {1, 0.5}, text]];
emit["box-jacobian", MLBridgeJacobian["box_volume", {2, 4, 8}, text]];
emit["box-value", MLBridgePredict["box_volume", {2, 4, 8}, text]];

f = MLBridgeFunction["box_volume", text];
emit["function-value", f[{2, 4, 8}]];
emit["function-batch", f[{{2, 4, 8}, {1, 2, 3}}]];
emit["function-gradient", f["Gradient"][{2, 4, 8}]];
emit["function-vjp", f["Gradient"][{2, 4, 8}, 0.5]];
emit["function-jacobian", f["Jacobian"][{2, 4, 8}]];
emit["function-symbolic", f[{a, b, c}]];
emit["function-symbolic-gradient", f["Gradient"][{a, b, c}]];
emit["function-symbolic-jacobian", f["Jacobian"][{a, 4, 8}]];
emit["function-substituted", f[{a, b, c}] /. {a -> 2, b -> 4, c -> 8}];
emit["function-property", f["Gradient"]];

(* The association body the text transport sends, for the server's own parser. *)
save["vjp-body", MLBridge`Private`encodeBody["Text", "box_volume",
  <|"x" -> {2., 4., 8.}, "cotangent" -> 2.|>]];
emit["wxf-element-types", MLBridge`Private`wxfElementType /@ {"box_volume", "lj13", "mnist"}];

(* ---- errors ------------------------------------------------------------------------------ *)

failureFields[result_] := If[Head[result] === Failure,
  {result[[2]]["Status"], result[[2]]["Code"], result[[2]]["MessageTemplate"]}, result];

emit["error-cotangent-shape",
  failureFields[MLBridgeGradient["box_volume", {2, 4, 8}, {1., 2.}, text]]];
emit["error-jacobian-batch",
  failureFields[MLBridgeJacobian["box_volume", {{2, 4, 8}, {1, 2, 3}}, text]]];
emit["error-unknown-model", failureFields[MLBridgeGradient["no-such-model", {2, 4, 8}, text]]];
emit["error-bad-cotangent",
  failureFields[MLBridgeGradient["box_volume", {2, 4, 8}, "dy", text]][[2]]];

(* A gradient reply that is code, not numbers, is refused without being evaluated. *)
emit["hostile-deep", Head[MLBridge`Private`decodeReply["Text", {200, "{{{(leaked = 1.)}}}"}]]];
emit["hostile-deep-leaked", ValueQ[leaked]];
emit["ragged-reply", Head[MLBridge`Private`decodeReply["Text", {200, "{{1.}, {1., 2.}}"}]]];
emit["scalar-reply", MLBridge`Private`decodeReply["Text", {200, "-4.5*^-7"}]];

(* ---- mnist: compared with the Python client on the Python side -------------------------- *)

images = Get[Environment["MLBRIDGE_TEST_IMAGES"]];
save["mnist-gradient-one", MLBridgeGradient["mnist", images[[1]], text]];
save["mnist-gradient-batch", MLBridgeGradient["mnist", images, text]];
save["mnist-vjp-one", MLBridgeGradient["mnist", images[[1]], UnitVector[10, 5], text]];
jacobian = MLBridgeJacobian["mnist", images[[1]], text];
emit["mnist-jacobian-dimensions", Dimensions[jacobian]];
save["mnist-jacobian", jacobian];
emit["mnist-gradient-dimensions", {Dimensions[MLBridgeGradient["mnist", images[[1]], text]],
  Dimensions[MLBridgeGradient["mnist", images, text]]}];

(* ---- lj13: the README's FindMinimum example, evaluated the way FindMinimum does ---------- *)

golden = N[GoldenRatio];
ico = Normalize /@ Flatten[Table[RotateLeft[{0., s, t golden}, k], {k, 0, 2}, {s, {-1, 1}},
  {t, {-1, 1}}], 2];
start = Flatten[Prepend[1.1 ico, {0., 0., 0.}]] + 0.01 Sin[Range[39]];
save["lj13-start", Partition[start, 3]];
lj = MLBridgeFunction["lj13", text];
vars = Array[v, 39];
emit["lj13-symbolic", Head[lj[Partition[vars, 3]]] === lj];
(* FindMinimum gives the variables values and evaluates objective and Gradient :> expr. *)
{energy, gradient} = Block[{v}, Do[v[i] = start[[i]], {i, 39}];
  {lj[Partition[vars, 3]], Flatten[lj["Gradient"][Partition[vars, 3]]]}];
emit["lj13-energy", energy];
save["lj13-gradient", gradient];
emit["lj13-gradient-length", Length[gradient]];
emit["lj13-descends", lj[Partition[start - 0.001 gradient, 3]] < energy];

(* ---- a model that serves no gradient (TFLite), on a second server ------------------------ *)

MLBridgeConnect[Environment["MLBRIDGE_TEST_NOGRAD_URL"],
  "TokenFile" -> Environment["MLBRIDGE_TEST_NOGRAD_TOKEN"]];
zero = ConstantArray[0., {28, 28}];
emit["nograd-gradient", failureFields[MLBridgeGradient["linear-lite", zero, text]]];
emit["nograd-jacobian", failureFields[MLBridgeJacobian["linear-lite", zero, text]]];
emit["nograd-function", failureFields[MLBridgeFunction["linear-lite", text]["Gradient"][zero]]];
emit["nograd-predict-dimensions", Dimensions[MLBridgePredict["linear-lite", zero, text]]];
MLBridgeConnect[];
emit["done", True];
