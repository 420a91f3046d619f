(* ::Package:: *)
(* MLBridge`Private`: one HTTPS exchange verified against a CA file, through the curl program.
   Read by MLBridge.wl inside its private context; not a package of its own.

   URLRead has no CA-file setting: VerifySecurityCertificates only turns verification on or
   off (never off here), and its libcurl is pointed at the kernel's own certificate bundle
   (the macOS keychain on a Mac), so environment variables such as SSL_CERT_FILE or
   CURL_CA_BUNDLE do not reach it. A server whose certificate only its own CA file vouches for
   (mlbridge serve --tls-cert, a self-signed certificate) is therefore reached through curl
   (macOS and Windows 10+ ship it; Linux has it packaged) with --cacert.
   The secret stays off curl's command line and off the disk: curl reads its options, headers
   included, from standard input (--config -). The body and the reply travel through
   temporary files, which hold no secret. *)

curlErrors = <|6 -> "NoServer", 7 -> "NoServer", 28 -> "NoServer", 35 -> "TLSError",
  51 -> "TLSError", 58 -> "TLSError", 60 -> "TLSError", 77 -> "TLSError", 83 -> "TLSError"|>;

(* Variables curl may need beyond the clean ones: proxies for a remote server. *)
$curlVariables = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
  "no_proxy", "NO_PROXY"};

(* One `name = "value"` line of a curl config; values were checked for control characters. *)
curlOption[name_String, value_String] :=
  name <> " = \"" <> StringReplace[value, {"\\" -> "\\\\", "\"" -> "\\\""}] <> "\"\n";

curlConfig[method_String, url_String, headers_List, caFile_String, bodyFile_, replyFile_String] :=
  StringJoin[
    curlOption["url", url], curlOption["request", method],
    curlOption["header", First[#] <> ": " <> Last[#]] & /@ headers,
    curlOption["header", "Expect:"],  (* no 100-continue pause on large bodies *)
    curlOption["cacert", caFile], curlOption["output", replyFile],
    curlOption["write-out", "%{http_code} %{content_type}"],
    curlOption["proto", "=https"], curlOption["connect-timeout", "10"],
    curlOption["noproxy", "127.0.0.1,localhost,::1"],
    If[StringQ[bodyFile], curlOption["data-binary", "@" <> bodyFile], ""],
    (* the target goes out exactly as signed: no globbing, no dot-segment removal *)
    "silent\nshow-error\ngloboff\npath-as-is\n"];

writeBytes[file_String, bytes_List] := With[{stream = OpenWrite[file, BinaryFormat -> True]},
  BinaryWrite[stream, bytes]; Close[stream]; file];

readBytes[file_String] := With[{stream = OpenRead[file, BinaryFormat -> True]},
  With[{bytes = BinaryReadList[stream]}, Close[stream]; bytes]];

curlFailure[code_String, message_String] := Failure["MLBridge", <|"MessageTemplate" -> message,
  "Status" -> Missing["NoResponse"], "Code" -> code|>];

(* {status, media type, body} as sendRequest gives it, or a Failure saying what went wrong;
   failures name base, the server's URL, rather than the path asked for. *)
curlExchange[method_String, base_String, path_String, headers_List, bytes_List, caFile_String] :=
  Module[{pairs = headers /. Rule -> List, bodyFile = None, replyFile, result, written},
    If[AnyTrue[Flatten[{pairs, base <> path, caFile}], controlCharacterQ],
      Return[clientFailure["a header or file name holds a control character", Missing["NotSent"]]]];
    replyFile = CreateFile[];
    If[bytes =!= {}, bodyFile = writeBytes[CreateFile[], bytes]];
    result = helperProcess[{"curl", "--config", "-"},
      curlConfig[method, base <> path, pairs, caFile, bodyFile, replyFile], $curlVariables];
    written = If[FileExistsQ[replyFile], readBytes[replyFile], {}];
    If[FileExistsQ[#], DeleteFile[#]] & /@ Select[{bodyFile, replyFile}, StringQ];
    Which[
      !AssociationQ[result], curlFailure["ClientError", "an https server with a CA file is " <>
        "reached through the curl program (URLRead cannot take a CA file), and curl did not " <>
        "run: install it, or add the CA to the kernel's trusted certificates and connect " <>
        "without \"CAFile\""],
      result["ExitCode"] =!= 0, curlError[result, base, caFile],
      True, curlReply[result["StandardOutput"], written, base]]];

(* curl's own first line of complaint, e.g. "(60) SSL certificate problem: ...". *)
curlComplaint[result_Association] := With[
  {lines = StringSplit[result["StandardError"], "\n"]},
  If[lines === {}, "exit code " <> ToString[result["ExitCode"]],
    StringReplace[StringTrim[First[lines]], StartOfString ~~ "curl: " -> ""]]];

curlError[result_Association, base_String, caFile_String] := With[
  {code = Replace[curlErrors[result["ExitCode"]], _Missing -> "NoServer"],
   said = " (curl: " <> curlComplaint[result] <> ")"},
  If[code === "TLSError",
    curlFailure[code, "cannot verify the server at " <> base <> " with the CA file " <> caFile <>
      said <> "; give the server's certificate, or the CA that signed it"],
    noServer["no answer from " <> base <> said]]];

(* The write-out line "status content-type" and the reply's bytes. *)
curlReply[written_String, bytes_List, base_String] := With[{fields = StringSplit[written, " "]},
  If[fields === {} || !StringMatchQ[First[fields], DigitCharacter ..],
    noServer["no answer from " <> base <> " (curl wrote " <> ToString[written, InputForm] <> ")"],
    {FromDigits[First[fields]], mediaType[StringJoin[Riffle[Rest[fields], " "]]],
      If[bytes === {}, "", ByteArray[bytes]]}]];
