(* ::Package:: *)
(* MLBridge: call models served by `mlbridge serve` from the Wolfram Language (12+). *)

BeginPackage["MLBridge`"];

MLBridgeConnect::usage =
  "MLBridgeConnect[] connects to the server described by $MLBRIDGE_HOME/server.json (default ~/.mlbridge). \
MLBridgeConnect[url, \"TokenFile\" -> path] connects to a server elsewhere: http on this machine, \
https anywhere (\"CAFile\" -> pem names the certificate to trust). \"Sign\" -> True signs every \
request instead of sending the secret.";
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
MLBridgeTrainingPlot::usage =
  "MLBridgeTrainingPlot[file] plots the loss and accuracy per epoch from the training report \
NAME.report.json that `mlbridge train` writes. MLBridgeTrainingPlot[report] takes the report as \
an Association.";

Begin["`Private`"];

(* Helpers in files of their own, read into this context: HMAC and signatures, what may be
   trusted with the secret, and HTTPS through curl when a CA file must be trusted. *)
With[{folder = DirectoryName[$InputFileName]},
  Get[FileNameJoin[{folder, #}]] & /@ {"Crypto.wl", "Trust.wl", "Curl.wl"}];

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

(* Files and replies are UTF-8 (JSON by definition): read them as such, whatever the default. *)
readText[file_String] :=
  If[FileExistsQ[file], Import[file, "Text", CharacterEncoding -> "UTF-8"], $Failed];
readText[_] := $Failed;

readJSON[text_String] := Quiet[ImportString[text, "RawJSON"]];
readJSON[_] := $Failed;

Options[MLBridgeConnect] = {"TokenFile" -> Automatic, "CAFile" -> Automatic, "Sign" -> False};

(* server.json is trusted only in a folder no one else can write, closed to others itself;
   its "ca_file" (an https server's certificate) is the default CA file. *)
MLBridgeConnect[opts : OptionsPattern[]] := Module[
  {home = homeDirectory[], file, info, refused},
  file = FileNameJoin[{home, "server.json"}];
  If[!FileExistsQ[file], Return[noServer["no readable server.json in " <> home]]];
  refused = checkTrusted[{{home, "Folder"}, {file, "File"}}];
  If[FailureQ[refused], Return[refused]];
  info = readJSON[readText[file]];
  Which[
    !AssociationQ[info], noServer["no readable server.json in " <> home],
    !StringQ[info["url"]] || !StringQ[info["token_file"]],
      noServer[file <> " lacks \"url\" or \"token_file\"; it is not the file `mlbridge serve` writes"],
    True, MLBridgeConnect[info["url"], "TokenFile" -> info["token_file"],
      "CAFile" -> Replace[OptionValue["CAFile"], Automatic :> publishedCAFile[info]],
      "Sign" -> OptionValue["Sign"]]]];

publishedCAFile[info_Association] :=
  If[StringQ[info["ca_file"]] && info["ca_file"] =!= "", info["ca_file"], None];

(* The token file gets the same check as server.json, whoever named it. The server proves it
   knows the secret before the secret is first sent (sendRequest). *)
MLBridgeConnect[address_String, OptionsPattern[]] := Module[
  {url = serverURL[address], sign = OptionValue["Sign"], caFile, tokenFile, refused, secret,
   conn, reply},
  If[FailureQ[url], Return[url]];
  If[!MemberQ[{True, False}, sign], Return[clientFailure["\"Sign\" must be True or False; got " <>
    ToString[sign, InputForm], Missing["NotSent"]]]];
  caFile = caFileFor[url, OptionValue["CAFile"]];
  If[FailureQ[caFile], Return[caFile]];
  tokenFile = Replace[OptionValue["TokenFile"],
    Automatic :> FileNameJoin[{homeDirectory[], "token"}]];
  If[!StringQ[tokenFile] || !FileExistsQ[tokenFile],
    Return[noServer["cannot read the token file " <> ToString[tokenFile]]]];
  refused = checkTrusted[{{tokenFile, "File"}}];
  If[FailureQ[refused], Return[refused]];
  secret = readSecret[tokenFile];
  If[FailureQ[secret], Return[secret]];
  conn = <|"URL" -> url, "Token" -> secret, "CAFile" -> caFile, "Sign" -> sign|>;
  reply = getJSON[conn, "/v2"];
  If[FailureQ[reply], Return[reply]];
  $connection = conn;
  $modelInfo = <||>;
  <|"URL" -> url, "TokenFile" -> tokenFile, "Server" -> reply["name"], "Version" -> reply["version"],
    "CAFile" -> caFile, "Sign" -> sign|>];

(* Anything else: a Failure rather than an unevaluated call (e.g. server.json without a url). *)
MLBridgeConnect[args___] /; !MatchQ[{args}, {OptionsPattern[]} | {_String, OptionsPattern[]}] :=
  clientFailure["expected MLBridgeConnect[] or MLBridgeConnect[url, \"TokenFile\" -> path]; " <>
    "got the arguments " <> ToString[{args}, InputForm], Missing["NotSent"]];

(* The server's address without trailing slashes (paths are appended to it), if the secret
   may go there. *)
serverURL[address_String] := With[{url = StringReplace[address, "/" .. ~~ EndOfString -> ""]},
  With[{problem = urlProblem[url]},
    If[problem === None, url, clientFailure[problem, Missing["NotSent"]]]]];

(* The PEM file that vouches for an https server's certificate; None: the kernel's own store. *)
caFileFor[_, Automatic | None] := None;
caFileFor[url_String, file_String] := Which[
  urlParts[url]["Scheme"] =!= "https", clientFailure["\"CAFile\" applies to https servers; " <>
    url <> " is http", Missing["NotSent"]],
  !FileExistsQ[file], clientFailure["cannot read the CA file " <> file <>
    " (the PEM certificate that vouches for the server)", Missing["NotSent"]],
  True, file];
caFileFor[_, other_] := clientFailure["\"CAFile\" must name a PEM file; got " <>
  ToString[other, InputForm], Missing["NotSent"]];

readSecret[file_String] := With[{text = readText[file]},
  Which[
    !StringQ[text], noServer["cannot read the token file " <> file],
    StringTrim[text] === "", clientFailure["the token file " <> file <> " is empty",
      Missing["NotSent"]],
    controlCharacterQ[StringTrim[text]], clientFailure["the token file " <> file <>
      " holds control characters; it is not a token `mlbridge serve` writes", Missing["NotSent"]],
    True, StringTrim[text]]];

(* Every call connects on first use, so a session can start with MLBridgePredict. *)
connection[] := If[AssociationQ[$connection], $connection,
  With[{result = MLBridgeConnect[]}, If[FailureQ[result], result, $connection]]];

(* ---- HTTP ------------------------------------------------------------------------------- *)

jsonType = "application/json";

(* The server proves it knows the secret before the secret, or a signature made with it, first
   goes to it; a success is remembered for the session, per URL and secret. *)
$proven = <||>;

provenKey[url_String, secret_String] := {url, sha256Hex[utf8Bytes[secret]]};
markProven[url_String, secret_String] := ($proven = Join[$proven, <|provenKey[url, secret] -> True|>]);

proveServer[conn_] := If[TrueQ[$proven[provenKey[conn["URL"], conn["Token"]]]], True,
  With[{result = askProof[conn]},
    If[result === True, markProven[conn["URL"], conn["Token"]]; True, result]]];

(* GET /v2/health/proof?nonce=N, without the secret: the answer must be HMAC(secret, label+N).
   Nothing answering is NoServer, as for any request; any other answer is a refusal. *)
askProof[conn_] := Module[{nonce = randomHex[], reply, value},
  reply = exchange[conn, "GET", "/v2/health/proof?nonce=" <> nonce, {}, jsonType, {}];
  If[FailureQ[reply], Return[reply]];
  value = If[reply[[1]] === 200 && reply[[2]] === jsonType, readJSON[bodyText[reply[[3]]]], $Failed];
  If[AssociationQ[value] && sameText[value["proof"], expectedProof[conn["Token"], nonce]], True,
    Failure["MLBridge", <|"MessageTemplate" -> "the server at " <> conn["URL"] <> " could not " <>
      "prove it knows the secret; not sending it (is this really your mlbridge server?)",
      "Status" -> reply[[1]], "Code" -> "ServerProof"|>]]];

(* Bearer sends the secret itself; a signature covers the method, the target as sent, the
   time, a fresh nonce and the exact body bytes, and the secret never leaves. *)
authorization[conn_, method_String, path_String, bytes_List] := If[TrueQ[conn["Sign"]],
  signedAuthorization[conn["Token"], method, urlParts[conn["URL"]]["Path"] <> path, bytes],
  "Bearer " <> conn["Token"]];

bodyBytes[bytes_ByteArray] := Normal[bytes];
bodyBytes[text_String] := utf8Bytes[text];
bodyBytes[_] := {};

(* One exchange that carries the secret: {status, media type, body bytes}, or a Failure (NoServer
   when nothing answers). The body goes as bytes, the ones signed. *)
sendRequest[conn_, method_String, path_String, body_, type_String] := Module[
  {bytes = bodyBytes[body], proven = proveServer[conn]},
  If[FailureQ[proven], Return[proven]];
  exchange[conn, method, path, bytes, type,
    {"Authorization" -> authorization[conn, method, path, bytes]}]];

(* Accept names the format wanted: the server lets it choose the reply's format, and URLRead
   would otherwise send its default, which accepts any type. An https server vouched for by a
   CA file is reached through curl (Curl.wl), everything else through URLRead. *)
exchange[conn_, method_String, path_String, bytes_List, type_String, auth_List] := With[
  {headers = Join[auth, {"Accept" -> type}]},
  If[StringQ[conn["CAFile"]],
    curlExchange[method, conn["URL"], path, Join[headers, {"Content-Type" -> type}], bytes,
      conn["CAFile"]],
    urlReadExchange[conn, method, path, bytes, type, headers]]];

(* URLRead gives $Failed with a message, or a Failure, depending on the version, when nothing
   answers. The body is read as bytes: "Body" would decode JSON, which names no charset, as
   ISO-8859-1. *)
urlReadExchange[conn_, method_String, path_String, bytes_List, type_String, headers_List] := Module[
  {request, reply},
  request = HTTPRequest[conn["URL"] <> path, <|"Method" -> method, "Headers" -> headers,
    "Body" -> If[bytes === {}, "", ByteArray[bytes]], "ContentType" -> type|>];
  reply = Quiet[URLRead[request, {"StatusCode", "ContentType", "BodyByteArray"}]];
  If[FailureQ[reply] || !AssociationQ[reply] || !IntegerQ[reply["StatusCode"]],
    noServer["no answer from " <> conn["URL"] <> httpsNote[conn["URL"]] <> proxyNote[]],
    {reply["StatusCode"], mediaType[reply["ContentType"]], reply["BodyByteArray"]}]];

httpsNote[url_String] := If[urlParts[url]["Scheme"] === "https",
  "; an https server whose certificate the kernel's own store does not vouch for needs " <>
  "\"CAFile\" -> the PEM file of its certificate (server.json's \"ca_file\")", ""];

mediaType[type_String] := ToLowerCase[StringTrim[StringReplace[type, ";" ~~ ___ -> ""]]];
mediaType[_] := "";

bodyText[bytes_ByteArray] := ByteArrayToString[bytes];
bodyText[text_String] := text;
bodyText[_] := "";  (* an empty body *)

(* What a reply that is not the server's own looks like, shortened. *)
bodySnippet[body_] := With[{text = StringTrim[StringReplace[bodyText[body], WhitespaceCharacter .. -> " "]]},
  If[StringLength[text] > 200, StringTake[text, 200] <> "...", text]];

(* The kernel's own proxy settings apply to 127.0.0.1 too when a proxy is set by hand, and no
   URLRead option bypasses them for one request: a failure says so. $InternetProxyRules holds
   them up to 13.x ("UseProxy" -> True), $DefaultProxyRules in later versions ("UseProxy" ->
   Manual); each is read only where it is defined. *)
manualProxyQ[] := TrueQ[
  (ListQ[$InternetProxyRules] && MemberQ[$InternetProxyRules, "UseProxy" -> True]) ||
  (AssociationQ[$DefaultProxyRules] && $DefaultProxyRules["UseProxy"] === Manual)];
proxyNote[] := If[manualProxyQ[],
  "; the kernel sends HTTP through the proxy set in its proxy settings ($InternetProxyRules, " <>
  "$DefaultProxyRules), which may capture 127.0.0.1: add 127.0.0.1 and localhost to the " <>
  "proxy exceptions (Help > Internet & Mail Settings > Proxy Settings)", ""];

getJSON[conn_, path_String] := Module[{reply, value},
  reply = sendRequest[conn, "GET", path, "", jsonType];
  If[FailureQ[reply], Return[reply]];
  value = If[reply[[2]] === jsonType, readJSON[bodyText[reply[[3]]]], $Failed];
  Which[
    reply[[1]] =!= 200, httpFailure[reply, value],
    AssociationQ[value], value,
    True, foreignReply[reply, "JSON"]]];

httpFailure[{status_Integer, type_, body_}, value_] := If[
  AssociationQ[value] && StringQ[value["error"]],
  Failure["MLBridge", <|"MessageTemplate" -> value["error"], "Status" -> status,
    "Code" -> If[StringQ[value["code"]], value["code"], "HTTPError"]|>],
  foreignReply[{status, type, body}, "JSON"]];

(* A reply in a format the server never writes (a proxy's HTML page, say). *)
foreignReply[{status_, type_, body_}, expected_String] := Failure["MLBridge", <|
  "MessageTemplate" -> "the server answered HTTP " <> ToString[status] <> " with " <>
    If[type === "", "no content type", type] <> " instead of " <> expected <> ": " <>
    bodySnippet[body] <> proxyNote[],
  "Status" -> status, "Code" -> "HTTPError"|>];

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
    {_, _}, ImageData[ColorConvert[resized, "Grayscale"], "Real32"],
    {_, _, 1}, Map[List, ImageData[ColorConvert[resized, "Grayscale"], "Real32"], {2}],
    {_, _, 3}, ImageData[ColorConvert[resized, "RGB"], "Real32"],
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
holdReply["Text", text_String] :=
  Quiet[ToExpression[text, InputForm, HoldComplete]] /. heldInfinities;
holdReply["Text", bytes_ByteArray] := holdReply["Text", bodyText[bytes]];
holdReply[_, _] := $Failed;

contentType["WXF"] = wxfType;
contentType["Text"] = textType;

(* Text replies write NaN as Indeterminate and infinities as Infinity and -Infinity; held, the
   last two are a symbol and Times[-1, Infinity], rewritten here to the numbers they stand for. *)
heldInfinities = {HoldPattern[Times[-1, Infinity]] -> DirectedInfinity[-1],
  HoldPattern[Infinity] -> DirectedInfinity[1]};

(* Only numbers, lists of them and numeric arrays are released: FreeQ looks at every part and
   head of the held reply, evaluating none; the released value must then be a rectangular
   array or a single number (a scalar function's value), of any rank. *)
numericPart = HoldComplete | List | _HoldComplete | _List | _Real | _Integer | _NumericArray |
  Indeterminate | DirectedInfinity | _DirectedInfinity;
numericReplyQ[held_HoldComplete] := FreeQ[held, Except[numericPart]];
numericReplyQ[_] := False;

releaseNumbers[HoldComplete[a_NumericArray]] := Normal[a];
releaseNumbers[held_] := ReleaseHold[held];

numberQ[x_] := NumberQ[x] || MatchQ[x, Indeterminate | DirectedInfinity[1] | DirectedInfinity[-1]];
numbersQ[value_] := numberQ[value] || ArrayQ[value, _, numberQ];

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

(* A reply of the transport's own media type (or none, as in the tests) is decoded held. *)
decodeReply[transport_, {status_, type_String, body_}] := If[
  MemberQ[{contentType[transport], ""}, type],
  decodeReply[transport, {status, body}],
  foreignReply[{status, type, body}, contentType[transport]]];

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
  reply = sendRequest[conn, "POST", "/" <> model <> route, body, contentType[transport]];
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
   into it, so it gets only these variables and the MLBRIDGE_ ones, whatever the kernel has.
   On Unix `env -i` starts it with exactly these. Windows has no `env -i` and RunProcess's
   documentation does not say whether ProcessEnvironment replaces the inherited environment or
   adds to it, so there PYTHONPATH and PYTHONHOME are also passed empty: Python ignores an
   empty PYTHONPATH or PYTHONHOME, so either reading leaves them without effect. Windows has no
   LD_LIBRARY_PATH, and Python (3.8+) no longer looks up extension modules' DLLs on PATH. *)
$passedVariables = {"HOME", "PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR",
  "TZ", "SYSTEMROOT", "USERPROFILE", "APPDATA", "LOCALAPPDATA", "TEMP", "TMP"};

(* A list of "NAME" -> "value" rules; extra names more variables to pass. *)
cleanEnvironment[] := cleanEnvironment[{}];
cleanEnvironment[extra_List] := Module[{all = GetEnvironment[]},
  all = If[AssociationQ[all], Normal[all], all];
  Select[all, StringQ[Last[#]] && Last[#] =!= "" &&
    (MemberQ[Join[$passedVariables, extra], First[#]] || StringMatchQ[First[#], "MLBRIDGE_" ~~ ___]) &]];

serverEnvironment["Windows"] := Join[cleanEnvironment[], {"PYTHONPATH" -> "", "PYTHONHOME" -> ""}];
serverEnvironment[_] := cleanEnvironment[];

serverCommand[command_String, args_List, env_List] :=
  serverCommand[command, args, env, $OperatingSystem];
serverCommand[command_String, args_List, _List, "Windows"] := Join[{command}, args];
serverCommand[command_String, args_List, env_List, _] :=
  Join[{"/usr/bin/env", "-i"}, First[#] <> "=" <> Last[#] & /@ env, {command}, args];

(* A system program (stat, id, curl) run the same way, so that the kernel's own library paths
   cannot break it; input, when a string, is its standard input. <|"ExitCode", ...|> or $Failed. *)
helperProcess[argv_List] := helperProcess[argv, None, {}];
helperProcess[argv_List, input_, extra_List] := With[{env = cleanEnvironment[extra]},
  With[{command = serverCommand[First[argv], Rest[argv], env]},
    Quiet[If[StringQ[input],
      RunProcess[command, All, input, ProcessEnvironment -> Association @@ env],
      RunProcess[command, ProcessEnvironment -> Association @@ env]]]]];

Options[MLBridgeStartServer] = {"Command" -> "mlbridge", "Arguments" -> {}};

(* `mlbridge serve --detach` returns once the server is ready and server.json is written. *)
MLBridgeStartServer[OptionsPattern[]] := Module[{env = serverEnvironment[$OperatingSystem], result},
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

MLBridgeStopServer[OptionsPattern[]] := Module[{env = serverEnvironment[$OperatingSystem], result},
  result = RunProcess[serverCommand[OptionValue["Command"], {"stop"}, env],
    ProcessEnvironment -> Association @@ env];
  $connection = None;
  If[AssociationQ[result] && result["ExitCode"] === 0, Null,
    clientFailure["mlbridge stop failed: " <> processOutput[result], Missing["NotSent"]]]];

(* ---- training curves -------------------------------------------------------------------- *)

curvePanels = {{"loss", {"loss", "val_loss"}}, {"accuracy", {"accuracy", "val_accuracy"}}};

MLBridgeTrainingPlot[file_String] := With[{report = readJSON[readText[file]]},
  If[AssociationQ[report], MLBridgeTrainingPlot[report],
    clientFailure["cannot read a training report (NAME.report.json) from " <> file,
      Missing["NotSent"]]]];

MLBridgeTrainingPlot[report_Association] := With[{history = report["history"]},
  If[ListQ[history] && history =!= {} && AllTrue[history, AssociationQ],
    GraphicsRow[curvePanel[report, history, #[[1]], #[[2]]] & /@ curvePanels, ImageSize -> 720],
    clientFailure["the report has no per-epoch \"history\"", Missing["NotSent"]]]];

(* Training and validation curves over the epochs; a curve the report lacks (no validation
   split: null values) is left out. *)
curvePanel[report_, history_, title_String, keys_List] := Module[{epochs, series, present},
  epochs = #["epoch"] & /@ history;
  series = Function[key, #[key] & /@ history] /@ keys;
  present = Select[Range[Length[keys]], AllTrue[series[[#]], NumberQ] &];
  ListLinePlot[series[[present]], DataRange -> {First[epochs], Last[epochs]},
    PlotLegends -> {"training", "validation"}[[present]],
    PlotLabel -> panelTitle[report, title], AxesLabel -> {"epoch", title}]];

panelTitle[report_, "accuracy"] := If[NumberQ[report["heldout_accuracy"]],
  "accuracy (held-out " <> ToString[NumberForm[report["heldout_accuracy"], {5, 4}]] <> ")",
  "accuracy"];
panelTitle[_, title_] := title;

End[];

EndPackage[];
