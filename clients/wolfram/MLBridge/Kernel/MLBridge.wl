(* ::Package:: *)
(* MLBridge: call models served by `mlbridge serve` from the Wolfram Language (12+). *)

BeginPackage["MLBridge`"];

MLBridgeConnect::usage =
  "MLBridgeConnect[] connects to the server described by $MLBRIDGE_HOME/server.json (default ~/.mlbridge). \
MLBridgeConnect[url, \"TokenFile\" -> path] connects to a server elsewhere.";
MLBridgeModels::usage = "MLBridgeModels[] lists the names of the models the server serves.";
MLBridgeModelInfo::usage =
  "MLBridgeModelInfo[model] gives the model's inputs, outputs, shapes and labels.";
MLBridgePredict::usage =
  "MLBridgePredict[model, data] gives the model's outputs for a matrix, a list of matrices, \
a NumericArray or an Image: a list for one example, a matrix for a batch.";
MLBridgeClassify::usage =
  "MLBridgeClassify[model, data] gives label -> probability for the most likely class. \
MLBridgeClassify[model, data, n] gives the n most likely as <|label -> probability, ...|>.";
MLBridgeGradient::usage =
  "MLBridgeGradient[model, x] gives the gradient of the sum of the model's outputs at x, shaped \
like x (one example or a batch), as NetPortGradient does. MLBridgeGradient[model, x, dy] gives \
the vector-Jacobian product with the cotangent dy, shaped like the outputs.";
MLBridgeJacobian::usage =
  "MLBridgeJacobian[model, x] gives the Jacobian of the model at one example x: an array of \
dimensions output dimensions + input dimensions.";
MLBridgeFunction::usage =
  "MLBridgeFunction[model] is a function backed by a served model: f[x] gives the outputs for \
a numeric array x and stays unevaluated for symbolic x; f[\"Gradient\"][x] and \
f[\"Gradient\"][x, dy] give MLBridgeGradient, f[\"Jacobian\"][x] gives MLBridgeJacobian. \
MLBridgeFunction[model, \"Transport\" -> \"Text\"] passes the option on.";
MLBridgeStartServer::usage =
  "MLBridgeStartServer[] starts `mlbridge serve` in the background and connects to it.";
MLBridgeStopServer::usage = "MLBridgeStopServer[] stops the server started for this home.";

Begin["`Private`"];

(* ---- connection ------------------------------------------------------------------------ *)

$connection = None;
$modelInfo = <||>;

noServerTemplate =
  "no mlbridge server found; start one with `command` in a terminal or MLBridgeStartServer[] (`detail`)";

noServer[detail_String] := Failure["MLBridge", <|
  "MessageTemplate" -> noServerTemplate,
  "MessageParameters" -> <|"command" -> "`mlbridge serve`", "detail" -> detail|>,
  "Status" -> Missing["NoResponse"], "Code" -> "NoServer"|>];

clientFailure[message_String, status_] := Failure["MLBridge", <|
  "MessageTemplate" -> message, "Status" -> status, "Code" -> "ClientError"|>];

homeDirectory[] := With[{home = Environment["MLBRIDGE_HOME"]},
  If[StringQ[home] && home =!= "", home, FileNameJoin[{$HomeDirectory, ".mlbridge"}]]];

readText[file_String] := If[FileExistsQ[file], Import[file, "Text"], $Failed];

readJSON[text_String] := ImportString[text, "RawJSON"];
readJSON[_] := $Failed;

Options[MLBridgeConnect] = {"TokenFile" -> Automatic};

MLBridgeConnect[] := Module[{file, info},
  file = FileNameJoin[{homeDirectory[], "server.json"}];
  info = readJSON[readText[file]];
  If[!AssociationQ[info], Return[noServer["no server.json in " <> homeDirectory[]]]];
  MLBridgeConnect[info["url"], "TokenFile" -> info["token_file"]]];

MLBridgeConnect[url_String, OptionsPattern[]] := Module[{tokenFile, secret, reply},
  tokenFile = Replace[OptionValue["TokenFile"],
    Automatic :> FileNameJoin[{homeDirectory[], "token"}]];
  secret = readText[tokenFile];
  If[!StringQ[secret], Return[noServer["cannot read the token file " <> ToString[tokenFile]]]];
  reply = getJSON[<|"URL" -> url, "Token" -> StringTrim[secret]|>, "/v2"];
  If[FailureQ[reply], Return[reply]];
  $connection = <|"URL" -> url, "Token" -> StringTrim[secret]|>;
  $modelInfo = <||>;
  <|"URL" -> url, "TokenFile" -> tokenFile, "Server" -> reply["name"], "Version" -> reply["version"]|>];

(* Every call connects on first use, so a session can start with MLBridgePredict. *)
connection[] := If[AssociationQ[$connection], $connection,
  With[{result = MLBridgeConnect[]}, If[FailureQ[result], result, $connection]]];

(* ---- HTTP ------------------------------------------------------------------------------- *)

authHeaders[conn_] := {"Authorization" -> "Bearer " <> conn["Token"]};

(* The CAS endpoint answers in the request's format, so no Accept header is needed. *)
sendRequest[conn_, method_String, path_String, body_, contentType_String, property_String] :=
  Module[{request, reply},
    request = HTTPRequest[conn["URL"] <> path, <|"Method" -> method,
      "Headers" -> authHeaders[conn], "Body" -> body, "ContentType" -> contentType|>];
    reply = Quiet[URLRead[request, {"StatusCode", property}]];
    If[FailureQ[reply] || !AssociationQ[reply],
      noServer["no answer from " <> conn["URL"]],
      {reply["StatusCode"], reply[property]}]];

getJSON[conn_, path_String] := Module[{reply, value},
  reply = sendRequest[conn, "GET", path, "", "application/json", "Body"];
  If[FailureQ[reply], Return[reply]];
  value = readJSON[reply[[2]]];
  Which[
    reply[[1]] =!= 200, httpFailure[reply[[1]], value],
    AssociationQ[value], value,
    True, clientFailure["the server's reply to GET " <> path <> " is not JSON", reply[[1]]]]];

httpFailure[status_Integer, value_] := Failure["MLBridge", <|
  "MessageTemplate" -> If[AssociationQ[value] && StringQ[value["error"]], value["error"],
    "the server answered HTTP " <> ToString[status]],
  "Status" -> status,
  "Code" -> If[AssociationQ[value] && StringQ[value["code"]], value["code"], "HTTPError"]|>];

(* ---- models ----------------------------------------------------------------------------- *)

MLBridgeModels[] := Module[{conn = connection[], reply},
  If[FailureQ[conn], Return[conn]];
  reply = getJSON[conn, "/v2/models"];
  If[FailureQ[reply], reply, #["name"] & /@ reply["models"]]];

MLBridgeModelInfo[model_String] := Module[{conn = connection[], meta},
  If[FailureQ[conn], Return[conn]];
  If[AssociationQ[$modelInfo[model]], Return[$modelInfo[model]]];
  meta = getJSON[conn, "/v2/models/" <> model];
  If[FailureQ[meta], Return[meta]];
  $modelInfo = Join[$modelInfo, <|model -> <|"Name" -> meta["name"],
    "Platform" -> meta["platform"], "Inputs" -> tensorInfo /@ meta["inputs"],
    "Outputs" -> tensorInfo /@ meta["outputs"], "Labels" -> modelLabels[meta]|>|>];
  $modelInfo[model]];

tensorInfo[spec_Association] :=
  <|"Name" -> spec["name"], "Datatype" -> spec["datatype"], "Shape" -> spec["shape"]|>;

modelLabels[meta_Association] := With[{params = meta["parameters"]},
  If[AssociationQ[params] && ListQ[params["labels"]], params["labels"], Missing["NotAvailable"]]];

(* ---- data preparation ------------------------------------------------------------------- *)

numericArrayQ[x_] := ListQ[x] && ArrayQ[x, _, NumberQ];

toArray[_, x_NumericArray] := Normal[x];
toArray[model_, img_Image] := imageToArray[model, img];
toArray[model_, imgs : {__Image}] := Module[{arrays = imageToArray[model, #] & /@ imgs},
  If[AnyTrue[arrays, FailureQ], SelectFirst[arrays, FailureQ], arrays]];
toArray[_, x_?numericArrayQ] := N[x];
toArray[_, x_] := clientFailure["expected a matrix, a list of matrices, a NumericArray or an \
Image; got " <> ToString[Short[x], InputForm], Missing["NotSent"]];

(* The per-example input shape from the metadata, e.g. {28, 28} or {32, 32, 3}. *)
exampleShape[model_] := With[{info = MLBridgeModelInfo[model]},
  If[FailureQ[info], info, Rest[First[info["Inputs"]]["Shape"]]]];

imageToArray[model_, img_Image] := Module[{shape = exampleShape[model], resized},
  If[FailureQ[shape], Return[shape]];
  resized = ImageResize[RemoveAlphaChannel[img], {shape[[2]], shape[[1]]}];
  Switch[shape,
    {_, _}, ImageData[ColorConvert[resized, "Grayscale"], "Real"],
    {_, _, 1}, Map[List, ImageData[ColorConvert[resized, "Grayscale"], "Real"], {2}],
    {_, _, 3}, ImageData[ColorConvert[resized, "RGB"], "Real"],
    _, clientFailure["cannot turn an Image into input shape " <> ToString[shape], Missing["NotSent"]]]];

(* ---- transports: each gives the reply held, never evaluated ---------------------------- *)

wxfType = "application/vnd.wolfram.wxf";
textType = "text/x-mathematica";

(* WXF sends x with the precision of the model's input: Real64 for FP64 (lj13, box_volume),
   Real32 otherwise; a cotangent always goes as Real64 (the server casts it). *)
wxfElementType[model_] := With[{info = MLBridgeModelInfo[model]},
  Which[FailureQ[info], info,
    First[info["Inputs"]]["Datatype"] === "FP64", "Real64",
    True, "Real32"]];

wxfValue[_, v_?NumberQ] := N[v];
wxfValue[type_, v_] := NumericArray[v, type];

(* The body: one array, or <|"x" -> x, "cotangent" -> dy|> built as a real Association. *)
encodeBody["WXF", model_, args_Association] := With[{type = wxfElementType[model]},
  If[FailureQ[type], type, BinarySerialize[<|"x" -> wxfValue[type, args["x"]],
    "cotangent" -> wxfValue["Real64", args["cotangent"]]|>]]];
encodeBody["WXF", model_, x_] := With[{type = wxfElementType[model]},
  If[FailureQ[type], type, BinarySerialize[wxfValue[type, x]]]];
encodeBody["Text", _, args_] := ToString[args, InputForm];

holdReply["WXF", bytes_ByteArray] := Quiet[BinaryDeserialize[bytes, HoldComplete]];
holdReply["Text", text_String] := Quiet[ToExpression[text, InputForm, HoldComplete]];
holdReply[_, _] := $Failed;

contentType["WXF"] = wxfType;
contentType["Text"] = textType;
replyProperty["WXF"] = "BodyByteArray";
replyProperty["Text"] = "Body";

(* Only numbers, lists of them and numeric arrays are released: FreeQ looks at every part and
   head of the held reply, evaluating none; the released value must then be a rectangular
   array or a single number (a scalar function's value). *)
numericPart = HoldComplete | List | _HoldComplete | _List | _Real | _Integer | _NumericArray;
numericReplyQ[held_HoldComplete] := FreeQ[held, Except[numericPart]];
numericReplyQ[_] := False;

releaseNumbers[HoldComplete[a_NumericArray]] := Normal[a];
releaseNumbers[held_] := ReleaseHold[held];

numbersQ[value_] := NumberQ[value] || ArrayQ[value, _, NumberQ];

(* A Failure in the reply is rebuilt from its string and integer fields, never evaluated.
   Text replies hold the rules themselves; WXF may give an Association already built, which
   KeyValuePattern reads without evaluating anything (only a value matching pattern is taken). *)
heldField[held_, key_String, pattern_] := With[
  {found = Join[
    Cases[held, (Rule | RuleDelayed)[key, v : pattern] :> v, Infinity],
    Cases[held, KeyValuePattern[{key -> v : pattern}] :> v, Infinity]]},
  If[found === {}, Missing["NotAvailable"], First[found]]];

serverFailure[held_, status_] := Failure["MLBridge", <|
  "MessageTemplate" -> Replace[heldField[held, "MessageTemplate", _String],
    _Missing -> "the server answered HTTP " <> ToString[status]],
  "Status" -> status,
  "Code" -> Replace[heldField[held, "Code", _String], _Missing -> "HTTPError"]|>];

notNumbers[status_] := clientFailure["the server's reply is not a numeric array", status];

decodeReply[transport_, {status_, body_}] := With[{held = holdReply[transport, body]},
  Which[
    status === 200 && numericReplyQ[held],
      With[{value = releaseNumbers[held]}, If[numbersQ[value], value, notNumbers[status]]],
    status === 200, notNumbers[status],
    True, serverFailure[held, status]]];

(* ---- the CAS endpoints: POST /model, /model/gradient, /model/jacobian ------------------- *)

transportFailure[transport_] := clientFailure["\"Transport\" must be \"WXF\" or \"Text\"; got " <>
  ToString[transport, InputForm], Missing["NotSent"]];

(* args: the input array, or <|"x" -> array, "cotangent" -> dy|> for a gradient. *)
callEndpoint[model_String, route_String, args_, transport_] := Module[
  {conn = connection[], body, reply},
  If[FailureQ[conn], Return[conn]];
  If[!MemberQ[{"WXF", "Text"}, transport], Return[transportFailure[transport]]];
  body = encodeBody[transport, model, args];
  If[FailureQ[body], Return[body]];
  reply = sendRequest[conn, "POST", "/" <> model <> route, body,
    contentType[transport], replyProperty[transport]];
  If[FailureQ[reply], reply, decodeReply[transport, reply]]];

(* ---- prediction ------------------------------------------------------------------------- *)

Options[MLBridgePredict] = {"Transport" -> "WXF"};

MLBridgePredict[model_String, data_, OptionsPattern[]] := With[{x = toArray[model, data]},
  If[FailureQ[x], x, callEndpoint[model, "", x, OptionValue["Transport"]]]];

(* ---- derivatives ------------------------------------------------------------------------ *)

Options[MLBridgeGradient] = Options[MLBridgePredict];
Options[MLBridgeJacobian] = Options[MLBridgePredict];

cotangentQ[dy_] := NumberQ[dy] || numericArrayQ[dy] || Head[dy] === NumericArray;

toCotangent[dy_NumericArray] := N[Normal[dy]];
toCotangent[dy_?cotangentQ] := N[dy];
toCotangent[dy_] := clientFailure["expected the cotangent dy as a number or an array shaped like \
the model's output; got " <> ToString[Short[dy], InputForm], Missing["NotSent"]];

MLBridgeGradient[model_String, data_, OptionsPattern[]] := With[{x = toArray[model, data]},
  If[FailureQ[x], x, callEndpoint[model, "/gradient", x, OptionValue["Transport"]]]];

MLBridgeGradient[model_String, data_, cotangent : Except[_?OptionQ], OptionsPattern[]] := With[
  {x = toArray[model, data], dy = toCotangent[cotangent]},
  Which[FailureQ[x], x, FailureQ[dy], dy,
    True, callEndpoint[model, "/gradient", <|"x" -> x, "cotangent" -> dy|>,
      OptionValue["Transport"]]]];

MLBridgeJacobian[model_String, data_, OptionsPattern[]] := With[{x = toArray[model, data]},
  If[FailureQ[x], x, callEndpoint[model, "/jacobian", x, OptionValue["Transport"]]]];

(* ---- MLBridgeFunction: a served model as a function ------------------------------------- *)

(* Numbers only: on symbolic arguments f[x] stays unevaluated, as FindMinimum needs. *)
functionArgumentQ[x_] := numericArrayQ[x] || Head[x] === NumericArray;

MLBridgeFunction[model_String, opts : OptionsPattern[]][x_?functionArgumentQ] :=
  MLBridgePredict[model, x, opts];
MLBridgeFunction[model_String, opts : OptionsPattern[]]["Gradient"][
  x_?functionArgumentQ] := MLBridgeGradient[model, x, opts];
MLBridgeFunction[model_String, opts : OptionsPattern[]]["Gradient"][
  x_?functionArgumentQ, dy_?cotangentQ] := MLBridgeGradient[model, x, dy, opts];
MLBridgeFunction[model_String, opts : OptionsPattern[]]["Jacobian"][
  x_?functionArgumentQ] := MLBridgeJacobian[model, x, opts];

(* ---- classification --------------------------------------------------------------------- *)

softmax[z_List] := With[{e = Exp[z - Max[z]]}, e / Total[e]];

labelsFor[model_, n_Integer] := With[{info = MLBridgeModelInfo[model]},
  If[AssociationQ[info] && ListQ[info["Labels"]] && Length[info["Labels"]] === n,
    info["Labels"], Range[0, n - 1]]];

(* The n most likely classes, most likely first. *)
topClasses[labels_, p_List, n_Integer] := Module[{order, rules},
  order = Take[SortBy[Range[Length[p]], -p[[#]] &], Min[n, Length[p]]];
  rules = MapThread[Rule, {labels[[order]], p[[order]]}];
  Association @@ rules];

Options[MLBridgeClassify] = Options[MLBridgePredict];

MLBridgeClassify[model_String, data_, opts : OptionsPattern[]] := With[
  {top = MLBridgeClassify[model, data, 1, opts]},
  Which[FailureQ[top], top, AssociationQ[top], firstRule[top], True, firstRule /@ top]];

firstRule[top_Association] := First[Keys[top]] -> First[Values[top]];

MLBridgeClassify[model_String, data_, n_Integer, opts : OptionsPattern[]] := Module[
  {logits = MLBridgePredict[model, data, opts], labels},
  If[FailureQ[logits], Return[logits]];
  labels = labelsFor[model, Last[Dimensions[logits]]];
  If[ArrayDepth[logits] === 1,
    topClasses[labels, softmax[logits], n],
    topClasses[labels, softmax[#], n] & /@ logits]];

(* ---- server process --------------------------------------------------------------------- *)

(* The server is a Python program: the kernel's own library and Python paths must not leak
   into it, so it gets only these variables and the MLBRIDGE_ ones, whatever the kernel has. *)
$passedVariables = {"HOME", "PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR",
  "TZ", "SYSTEMROOT", "USERPROFILE", "APPDATA", "LOCALAPPDATA", "TEMP", "TMP"};

(* A list of "NAME" -> "value" rules. *)
cleanEnvironment[] := Module[{all = GetEnvironment[]},
  all = If[AssociationQ[all], Normal[all], all];
  Select[all, StringQ[Last[#]] && Last[#] =!= "" &&
    (MemberQ[$passedVariables, First[#]] || StringMatchQ[First[#], "MLBRIDGE_" ~~ ___]) &]];

(* On Unix `env -i` guarantees the clean environment whatever ProcessEnvironment merges. *)
serverCommand[command_String, args_List, env_List] := If[$OperatingSystem === "Windows",
  Join[{command}, args],
  Join[{"/usr/bin/env", "-i"}, First[#] <> "=" <> Last[#] & /@ env, {command}, args]];

Options[MLBridgeStartServer] = {"Command" -> "mlbridge", "Arguments" -> {}};

(* `mlbridge serve --detach` returns once the server is ready and server.json is written. *)
MLBridgeStartServer[OptionsPattern[]] := Module[{env = cleanEnvironment[], result},
  If[AssociationQ[Quiet[MLBridgeConnect[]]], Return[MLBridgeConnect[]]];
  result = RunProcess[serverCommand[OptionValue["Command"],
    Join[{"serve", "--detach"}, OptionValue["Arguments"]], env],
    ProcessEnvironment -> Association @@ env];
  If[AssociationQ[result] && result["ExitCode"] === 0, MLBridgeConnect[],
    clientFailure["could not start the server with " <> OptionValue["Command"] <>
      " (give its full path with \"Command\" -> path): " <> processOutput[result],
      Missing["NoResponse"]]]];

processOutput[result_Association] := StringTrim[result["StandardError"] <> result["StandardOutput"]];
processOutput[result_] := ToString[result];

Options[MLBridgeStopServer] = {"Command" -> "mlbridge"};

MLBridgeStopServer[OptionsPattern[]] := Module[{env = cleanEnvironment[], result},
  result = RunProcess[serverCommand[OptionValue["Command"], {"stop"}, env],
    ProcessEnvironment -> Association @@ env];
  $connection = None;
  If[AssociationQ[result] && result["ExitCode"] === 0, Null,
    clientFailure["mlbridge stop failed: " <> processOutput[result], Missing["NotSent"]]]];

End[];

EndPackage[];
