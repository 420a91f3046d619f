# mlbridge client for R: send arrays to models served by `mlbridge serve`.
#
#   source("clients/r/mlbridge.R")
#   mlbridge_models()                      # c("mnist", "mnist-cnn")
#   logits <- mlbridge_predict("mnist", img)   # img: 28x28 matrix, img[row, col]
#   mlbridge_gradient("box_volume", c(2, 4, 8))   # c(32, 16, 8)
#
# Needs the packages httr and jsonlite (and openssl, which httr itself
# needs). Requests use the KServe V2 JSON endpoint POST
# /v2/models/{name}/infer with the server's secret, as a Bearer header or, with
# sign = TRUE, as an HMAC signature; gradients go to the model's gradient
# companion, {name}.vjp. Before the secret is used, the connection file, the
# token file and the URL are checked and the server must prove it knows the
# secret (docs: clients/r/README.md, "Trust").

#' Find a running mlbridge server and read its secret.
#'
#' With no url, reads server.json in $MLBRIDGE_HOME (default ~/.mlbridge),
#' which `mlbridge serve` writes at start-up, and the token file it names;
#' both files and the folder must be the user's own and closed to others. Give
#' `url` and `token_file` to reach a server elsewhere: http on this machine,
#' https anywhere. `ca_file` is the PEM certificate(s) an https server's
#' certificate is checked against (default: "ca_file" from server.json, else
#' the system's store). With `sign = TRUE` requests carry an HMAC signature
#' instead of the secret. Returns a list of class "mlbridge_connection".
mlbridge_connect <- function(url = NULL, token_file = NULL, ca_file = NULL, sign = FALSE) {
  if (is.null(url) != is.null(token_file)) {
    stop("mlbridge_connect: give both url and token_file, or neither", call. = FALSE)
  }
  if (!isTRUE(sign) && !isFALSE(sign)) {
    stop("mlbridge_connect: sign must be TRUE or FALSE", call. = FALSE)
  }
  where <- "mlbridge_connect"
  if (is.null(url)) {
    info <- .mlbridge_server_info(.mlbridge_home())
    url <- info$url
    token_file <- info$token_file
    if (is.null(ca_file)) ca_file <- info$ca_file
    where <- paste("mlbridge:", info$path)
  }
  url <- .mlbridge_check_url(url, where)
  ca_file <- .mlbridge_check_ca_file(ca_file, url)
  structure(list(url = url, token = .mlbridge_read_token(token_file), ca_file = ca_file,
                 sign = sign),
            class = "mlbridge_connection")
}

#' Print a connection without showing its secret.
print.mlbridge_connection <- function(x, ...) {
  cat("<mlbridge connection to ", x$url,
      if (!is.null(x$ca_file)) paste0(", CA file ", x$ca_file),
      if (isTRUE(x$sign)) ", signed requests", ">\n", sep = "")
  invisible(x)
}

#' List the served models' names, or return one model's V2 metadata as a list.
mlbridge_models <- function(name = NULL, conn = mlbridge_connect()) {
  if (!is.null(name)) {
    return(.mlbridge_request(conn, "GET", .mlbridge_model_path(name)))
  }
  reply <- .mlbridge_request(conn, "GET", "/v2/models")
  vapply(reply$models, function(model) model$name, character(1))
}

#' Run a served model on images; return its outputs (logits).
#'
#' Layout: x[n, row, col] is pixel (row, col) of image n, as the model sees
#' [n][row][col]; a single image is a matrix img[row, col] (as image() of
#' t(img[28:1, ]) shows it upright). R stores arrays column-major and the wire
#' is row-major; the conversion is done here, so never transpose images.
#'   28x28 matrix       one image  -> numeric vector of 10 logits
#'   N x 28 x 28 array  N images   -> N x 10 matrix, row n for image n
#' MNIST models expect values in [0, 1]. A request the server rejects raises
#' an error of class "mlbridge_error" carrying the server's message, status
#' and code.
mlbridge_predict <- function(model, x, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x)
  spec <- .mlbridge_input_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  tensor <- .mlbridge_tensor(spec$name, spec$datatype, wire$dims, x)
  reply <- .mlbridge_infer(conn, model, list(tensor))
  out <- .mlbridge_output_array(reply$outputs[[1]])
  if (wire$single && length(dim(out)) == 2 && nrow(out) == 1) out[1, ] else out
}

#' Gradient of a served model's outputs at x, shaped like x.
#'
#' Without dy, the gradient of the sum of the model's outputs (what Wolfram's
#' NetPortGradient gives): for a scalar function such as "box_volume" or
#' "lj13" simply its gradient. With dy, shaped like what mlbridge_predict(model,
#' x) returns (10 numbers for one MNIST image, an N x 10 matrix for N images, a
#' number for one example of a scalar function), the vector-Jacobian product
#' t(J(x)) %*% dy. x is one example or a batch, laid out as for
#' mlbridge_predict; the result has x's dimensions. The request goes to the
#' model's gradient companion (parameters$gradient in its metadata, e.g.
#' "box_volume.vjp"); a model without one raises an "mlbridge_error" with code
#' "GradientUnavailable" and the server's reason.
mlbridge_gradient <- function(model, x, dy = NULL, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x, "mlbridge_gradient")
  spec <- .mlbridge_input_spec(conn, model)
  grad <- .mlbridge_gradient_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  tensors <- list(.mlbridge_tensor(spec$name, spec$datatype, wire$dims, x))
  if (!is.null(dy)) {
    shape <- c(wire$dims[1], .mlbridge_output_shape(conn, model, wire$dims, x))
    .mlbridge_check_cotangent(dy, shape, wire$single)
    tensors[[2]] <- .mlbridge_tensor(grad$cotangent, grad$cotangent_datatype, shape, dy)
  }
  reply <- .mlbridge_infer(conn, grad$companion, tensors)
  .mlbridge_from_row_major(.mlbridge_output_data(reply, grad$grad), dim(x))
}

#' Jacobian of a served model at one example x.
#'
#' J[k, i, j] is d output[k] / d x[i, j]: dimensions output dimensions + input
#' dimensions, e.g. 10 x 28 x 28 for "mnist" and a 28x28 image; for a scalar
#' function ("box_volume", "lj13") the gradient, shaped like x. One call of the
#' gradient companion: x repeated once per output element, with the unit
#' cotangents. Errors as for mlbridge_gradient.
mlbridge_jacobian <- function(model, x, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x, "mlbridge_jacobian")
  spec <- .mlbridge_input_spec(conn, model)
  grad <- .mlbridge_gradient_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  if (wire$dims[1] != 1) {
    stop(sprintf("mlbridge_jacobian: x must be one example of model '%s' (shape [%s]); got [%s]",
                 model, paste(spec$shape[-1], collapse = ", "), paste(wire$dims, collapse = ", ")),
         call. = FALSE)
  }
  out <- .mlbridge_output_shape(conn, model, wire$dims, x)
  count <- prod(out)  # one row of the Jacobian per output element
  batch <- rep(.mlbridge_row_major(x), count)
  tensors <- list(
    .mlbridge_tensor(spec$name, spec$datatype, c(count, wire$dims[-1]), batch),
    .mlbridge_tensor(grad$cotangent, grad$cotangent_datatype, c(count, out), diag(count)))
  reply <- .mlbridge_infer(conn, grad$companion, tensors)
  data <- .mlbridge_output_data(reply, grad$grad)
  # A scalar function's Jacobian is its gradient, shaped like x.
  shape <- if (length(out) == 0) dim(x) else c(out, wire$dims[-1])
  .mlbridge_from_row_major(data, shape)
}

.mlbridge_check_arguments <- function(model, x, caller = "mlbridge_predict") {
  if (!is.character(model) || length(model) != 1 || !nzchar(model)) {
    stop(sprintf("%s: model must be a model name, e.g. \"mnist\"", caller), call. = FALSE)
  }
  if (!(is.numeric(x) || is.logical(x))) {
    stop(sprintf("%s: x must be a numeric vector, matrix or array (one example or a batch); got %s",
                 caller, class(x)[1]), call. = FALSE)
  }
}

# Model metadata is fetched once per server and model: it names the input, its
# rank tells a single image from a batch, and it names the gradient companion.
.mlbridge_metadata_cache <- new.env(parent = emptyenv())

.mlbridge_metadata <- function(conn, model) {
  key <- paste(conn$url, model, sep = "|")
  if (is.null(.mlbridge_metadata_cache[[key]])) {
    .mlbridge_metadata_cache[[key]] <- mlbridge_models(model, conn)
  }
  .mlbridge_metadata_cache[[key]]
}

.mlbridge_input_spec <- function(conn, model) {
  meta <- .mlbridge_metadata(conn, model)
  if (length(meta$inputs) != 1) {
    stop(sprintf("mlbridge: model '%s' has %d inputs; this client sends exactly one",
                 model, length(meta$inputs)), call. = FALSE)
  }
  input <- meta$inputs[[1]]
  list(name = input$name, datatype = input$datatype, shape = unlist(input$shape))
}

# The companion serving the model's vector-Jacobian product and its tensor
# names; a model without one is an error that gives the server's reason.
.mlbridge_gradient_spec <- function(conn, model) {
  meta <- .mlbridge_metadata(conn, model)
  companion <- meta$parameters[["gradient"]]  # not $, which would match gradient_unavailable
  if (is.null(companion)) {
    reason <- meta$parameters[["gradient_unavailable"]]
    if (!is.character(reason)) reason <- "the server names no gradient"
    .mlbridge_raise(sprintf("mlbridge: model '%s' serves no gradient: %s", model, reason),
                    NA_integer_, "GradientUnavailable")
  }
  output <- meta$outputs[[1]]
  list(companion = companion, cotangent = paste0(output$name, "_cotangent"),
       cotangent_datatype = output$datatype,
       grad = paste0(.mlbridge_input_spec(conn, model)$name, "_grad"))
}

# One example's output shape: from the metadata, or, when that leaves a
# dimension open, from the model's own answer at x.
.mlbridge_output_shape <- function(conn, model, dims, x) {
  shape <- as.integer(unlist(.mlbridge_metadata(conn, model)$outputs[[1]]$shape))[-1]
  if (any(shape < 0)) {
    spec <- .mlbridge_input_spec(conn, model)
    reply <- .mlbridge_infer(conn, model, list(.mlbridge_tensor(spec$name, spec$datatype, dims, x)))
    shape <- as.integer(unlist(reply$outputs[[1]]$shape))[-1]
  }
  shape
}

# The shape x travels with, and whether it is one example: an array with one
# dimension fewer than the model's input (a vector for a model whose examples
# are vectors) is sent as a batch of one.
.mlbridge_wire_dims <- function(spec, x) {
  dims <- if (is.null(dim(x))) length(x) else dim(x)
  single <- length(spec$shape) == length(dims) + 1
  list(dims = if (single) c(1L, dims) else dims, single = single)
}

.mlbridge_check_cotangent <- function(dy, shape, single) {
  # A vector may hold the outputs in any layout; an array must have their
  # dimensions (with or without a single example's batch axis), so that a
  # transposed matrix is not misread.
  fits <- length(dy) == prod(shape) &&
    (is.null(dim(dy)) || identical(as.integer(dim(dy)), as.integer(shape)) ||
       (single && identical(as.integer(dim(dy)), as.integer(shape[-1]))))
  if (!fits) {
    got <- if (is.null(dim(dy))) sprintf("%d numbers", length(dy))
           else paste0("[", paste(dim(dy), collapse = ", "), "]")
    stop(sprintf(paste("mlbridge_gradient: dy must have the shape of the model's outputs",
                       "for this x, [%s]; got %s"),
                 paste(shape, collapse = ", "), got), call. = FALSE)
  }
}

# R stores arrays column-major; reversing the dimensions gives the row-major
# (C) order of the V2 "data" field.
.mlbridge_row_major <- function(x) {
  if (length(dim(x)) > 1) as.numeric(aperm(x, rev(seq_along(dim(x))))) else as.numeric(x)
}

.mlbridge_from_row_major <- function(data, shape) {
  if (length(shape) <= 1) return(data)
  aperm(array(data, rev(shape)), rev(seq_along(shape)))
}

# One V2 input tensor. The numbers are written here, not by jsonlite (which
# stops at 15 digits): 17 significant digits for FP64, so that they arrive
# exactly, 9 (exact for float32) otherwise.
.mlbridge_tensor <- function(name, datatype, dims, x) {
  if (anyNA(x)) stop("mlbridge: NA and NaN cannot be sent to a model", call. = FALSE)
  format <- if (identical(datatype, "FP64")) "%.17g" else "%.9g"
  numbers <- sprintf(format, .mlbridge_row_major(x))
  list(name = name, datatype = datatype, shape = I(as.integer(dims)),
       data = structure(paste0("[", paste(numbers, collapse = ","), "]"), class = "json"))
}

.mlbridge_infer <- function(conn, model, tensors) {
  body <- jsonlite::toJSON(list(inputs = tensors), auto_unbox = TRUE, json_verbatim = TRUE)
  .mlbridge_request(conn, "POST", paste0(.mlbridge_model_path(model), "/infer"), body)
}

.mlbridge_output_data <- function(reply, name) {
  for (output in reply$outputs) {
    if (identical(output$name, name)) return(.mlbridge_checked_data(output))
  }
  stop(sprintf("mlbridge: the reply has no output \"%s\"", name), call. = FALSE)
}

.mlbridge_checked_data <- function(output) {
  shape <- as.integer(unlist(output$shape))
  data <- as.numeric(unlist(output$data))
  if (length(data) != prod(shape)) {
    stop(sprintf("mlbridge: output \"%s\" has %d values, but its shape [%s] needs %d",
                 output$name, length(data), paste(shape, collapse = ", "), prod(shape)),
         call. = FALSE)
  }
  data
}

.mlbridge_output_array <- function(output) {
  .mlbridge_from_row_major(.mlbridge_checked_data(output), as.integer(unlist(output$shape)))
}

# A model's path; the name is percent-encoded, so the request line carries
# exactly the target that a signature covers.
.mlbridge_model_path <- function(name) {
  paste0("/v2/models/", utils::URLencode(name, reserved = TRUE, repeated = TRUE))
}

.mlbridge_request <- function(conn, method, path, body = NULL) {
  .mlbridge_verify_server(conn)
  url <- paste0(conn$url, path)
  bytes <- if (is.null(body)) raw() else charToRaw(enc2utf8(as.character(body)))
  authorization <- if (isTRUE(conn$sign)) {
    .mlbridge_signature(conn$token, method, .mlbridge_target(url), bytes)
  } else {
    paste("Bearer", conn$token)
  }
  response <- .mlbridge_send(conn, method, url, bytes, c(Authorization = authorization))
  text <- httr::content(response, as = "text", encoding = "UTF-8")
  status <- httr::status_code(response)
  if (status < 200 || status >= 300) .mlbridge_server_error(status, text, method, url)
  jsonlite::fromJSON(text, simplifyVector = FALSE)
}

# One HTTP exchange. Certificates are always verified (against conn$ca_file
# when given), redirects are not followed (they would carry the secret
# elsewhere), and the path goes out as written (curl would otherwise resolve
# "..", changing what was signed).
.mlbridge_send <- function(conn, method, url, bytes, headers = character()) {
  headers <- httr::add_headers(.headers = c(headers, Accept = "application/json"))
  options <- httr::config(
    noproxy = "127.0.0.1,localhost,::1",  # loopback never goes through the user's proxy
    connecttimeout = 10, followlocation = 0L, path_as_is = 1L,
    ssl_verifypeer = 1L, ssl_verifyhost = 2L)
  if (!is.null(conn$ca_file)) options <- c(options, httr::config(cainfo = conn$ca_file))
  tryCatch(
    if (method == "GET") httr::GET(url, headers, options)
    else httr::POST(url, headers, options, httr::content_type_json(), body = bytes),
    error = function(e) {
      stop(sprintf("mlbridge: %s %s failed: %s", method, url, conditionMessage(e)),
           call. = FALSE)
    })
}

.mlbridge_server_error <- function(status, text, method, url) {
  # The server answers {"error": "...", "code": "..."}; anything else (a
  # proxy's HTML page, say) is shown as it came, shortened.
  parsed <- tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE), error = function(e) NULL)
  message <- if (is.list(parsed) && !is.null(parsed$error)) parsed$error else trimws(text)
  if (is.na(message) || !nzchar(message)) message <- "the server sent an empty error reply"
  if (nchar(message) > 500) message <- paste0(substr(message, 1, 500), "...")
  code <- if (is.list(parsed) && is.character(parsed$code)) parsed$code else paste0("HTTP", status)
  .mlbridge_raise(sprintf("mlbridge: %s (HTTP %d from %s %s)", message, status, method, url),
                  status, code)
}

# An error of class "mlbridge_error" with the HTTP status (NA when no request
# was sent) and the server's code.
.mlbridge_raise <- function(message, status, code) {
  stop(structure(class = c("mlbridge_error", "error", "condition"),
                 list(message = message, call = NULL, status = status, code = code)))
}

# Trust (docs: README.md, "Trust"). The secret is used only with a server
# found through files no one else could have planted, at a URL that stays on
# this machine unless it is https, and after the server proved it knows it.

.mlbridge_home <- function() {
  home <- Sys.getenv("MLBRIDGE_HOME")
  home <- if (nzchar(home)) path.expand(home) else file.path(path.expand("~"), ".mlbridge")
  if (grepl("[^/]/+$", home)) sub("/+$", "", home) else home  # "home/" would follow a link
}

# server.json of `home`, after checking the folder and the file; returns its
# fields plus `path`.
.mlbridge_server_info <- function(home) {
  path <- file.path(home, "server.json")
  if (!file.exists(path)) {
    stop(sprintf(paste("mlbridge: no server found: %s does not exist;",
                       "start one with `mlbridge serve` or set MLBRIDGE_HOME"), path),
         call. = FALSE)
  }
  .mlbridge_check_private(home, folder = TRUE)
  .mlbridge_check_private(path)
  info <- tryCatch(jsonlite::fromJSON(path, simplifyVector = FALSE), error = function(e) {
    stop(sprintf("mlbridge: cannot read %s: %s", path, conditionMessage(e)), call. = FALSE)
  })
  is_text <- function(x) is.character(x) && length(x) == 1 && !is.na(x) && nzchar(x)
  if (!is.list(info) || !is_text(info$url) || !is_text(info$token_file) ||
        !(is.null(info$ca_file) || is_text(info$ca_file))) {
    stop(sprintf(paste("mlbridge: %s: expected a JSON object with strings \"url\" and",
                       "\"token_file\" (and optionally \"ca_file\")"), path), call. = FALSE)
  }
  c(info, path = path)
}

# Refuse a symbolic link, someone else's file or folder, a folder others may
# write to (mode & 022) or a file others may read or write (mode & 077).
.mlbridge_check_private <- function(path, folder = FALSE) {
  link <- Sys.readlink(path)
  if (!is.na(link) && nzchar(link)) {
    stop(sprintf("mlbridge: %s is a symbolic link; refusing to trust it with secrets", path),
         call. = FALSE)
  }
  info <- file.info(path, extra_cols = TRUE)
  if (is.na(info$mode)) stop(sprintf("mlbridge: %s does not exist", path), call. = FALSE)
  if (is.na(info$uid)) {  # file.info gives no owner (not a Unix system)
    stop(sprintf("mlbridge: cannot tell who owns %s; refusing to trust it with secrets", path),
         call. = FALSE)
  }
  if (info$uid != .mlbridge_uid()) {
    stop(sprintf("mlbridge: %s belongs to another user; refusing to trust it with secrets",
                 path), call. = FALSE)
  }
  mode <- as.integer(info$mode)
  forbidden <- if (folder) strtoi("022", 8L) else strtoi("077", 8L)
  if (bitwAnd(mode, forbidden) != 0) {
    problem <- if (folder) "writable by others" else "open to others"
    fix <- if (folder) "chmod go-w" else "chmod 600"
    stop(sprintf("mlbridge: %s is %s (mode %s); run: %s %s",
                 path, problem, format(as.octmode(mode)), fix, path), call. = FALSE)
  }
}

# This process's user id: the owner of R's session temporary folder, which R
# created (no child process, no parsing).
.mlbridge_uid <- function() file.info(tempdir(), extra_cols = TRUE)$uid

.mlbridge_read_token <- function(token_file) {
  if (!is.character(token_file) || length(token_file) != 1 || is.na(token_file)) {
    stop("mlbridge: token_file must be the path of the token file", call. = FALSE)
  }
  token_file <- path.expand(token_file)
  if (!file.exists(token_file)) {
    stop(sprintf("mlbridge: token file %s does not exist", token_file), call. = FALSE)
  }
  .mlbridge_check_private(token_file)
  lines <- readLines(token_file, warn = FALSE, encoding = "UTF-8")
  token <- trimws(paste(lines, collapse = ""))
  if (!nzchar(token)) stop(sprintf("mlbridge: token file %s is empty", token_file), call. = FALSE)
  token
}

# The URL without trailing slashes, if it is http on this machine or https
# anywhere, names no user, and holds no control characters.
.mlbridge_check_url <- function(url, where) {
  if (!is.character(url) || length(url) != 1 || is.na(url)) {
    stop(sprintf("%s: url must be a string such as \"http://127.0.0.1:8123\"", where),
         call. = FALSE)
  }
  codes <- utf8ToInt(enc2utf8(url))
  if (anyNA(codes) || any(codes < 0x20 | codes == 0x7F)) {
    stop(sprintf("%s: the URL %s holds control characters; refusing to use it",
                 where, encodeString(url, quote = "\"")), call. = FALSE)
  }
  pattern <- paste0("^([A-Za-z][A-Za-z0-9+.-]*)://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+)",
                    "(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$")
  parts <- regmatches(url, regexec(pattern, url))[[1]]
  scheme <- tolower(parts[2])
  if (length(parts) == 0 || !scheme %in% c("http", "https") ||
        (nzchar(parts[4]) && as.integer(substring(parts[4], 2)) > 65535)) {
    stop(sprintf(paste("%s: expected an http or https URL such as",
                       "http://127.0.0.1:8123 (host, optional port and path); got %s"),
                 where, url), call. = FALSE)
  }
  if (scheme == "http" && !.mlbridge_is_loopback(parts[3])) {
    stop(sprintf(paste("%s: %s is not on this machine; use https for a remote",
                       "server"), where, url), call. = FALSE)
  }
  sub("/+$", "", paste0(scheme, substring(url, nchar(scheme) + 1)))
}

# localhost, 127.0.0.0/8 (dotted quad, no leading zeros) or [::1] in any spelling.
.mlbridge_is_loopback <- function(host) {
  host <- tolower(host)
  if (host == "localhost") return(TRUE)
  octets <- "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
  if (grepl(sprintf("^127\\.%s\\.%s\\.%s$", octets, octets, octets), host)) return(TRUE)
  if (!grepl("^\\[[0-9a-f:]+\\]$", host)) return(FALSE)
  halves <- strsplit(substring(host, 2, nchar(host) - 1), "::", fixed = TRUE)[[1]]
  groups <- function(text) if (nzchar(text)) strsplit(text, ":", fixed = TRUE)[[1]] else character()
  left <- groups(halves[1])
  right <- if (length(halves) == 2) groups(halves[2]) else character()
  compressed <- grepl("::", host, fixed = TRUE)
  given <- c(left, right)
  if (length(halves) > 2 || any(!grepl("^[0-9a-f]{1,4}$", given)) ||
        (compressed && length(given) > 7) || (!compressed && length(given) != 8)) {
    return(FALSE)
  }
  words <- c(strtoi(left, 16L), rep(0L, 8 - length(given)), strtoi(right, 16L))
  all(words[1:7] == 0L) && words[8] == 1L
}

# The CA file as an absolute path: only for https, and it must exist.
.mlbridge_check_ca_file <- function(ca_file, url) {
  if (is.null(ca_file)) return(NULL)
  if (!is.character(ca_file) || length(ca_file) != 1 || is.na(ca_file)) {
    stop("mlbridge: ca_file must be the path of a PEM certificate file", call. = FALSE)
  }
  if (!startsWith(url, "https://")) {
    stop(sprintf("mlbridge: ca_file is for https servers; %s is http", url), call. = FALSE)
  }
  if (!file.exists(ca_file) || dir.exists(ca_file)) {
    stop(sprintf("mlbridge: CA file %s does not exist (expected a PEM certificate)", ca_file),
         call. = FALSE)
  }
  normalizePath(ca_file)
}

# Servers that proved they know a secret, by URL and SHA-256 of the secret.
.mlbridge_proven <- new.env(parent = emptyenv())

# Before the secret is used on a server the first time in this session, the
# server must answer a fresh nonce with its HMAC under the secret.
.mlbridge_verify_server <- function(conn) {
  key <- paste(conn$url, .mlbridge_hex(openssl::sha256(charToRaw(enc2utf8(conn$token)))))
  if (isTRUE(.mlbridge_proven[[key]])) return(invisible(TRUE))
  nonce <- .mlbridge_hex(openssl::rand_bytes(32))
  response <- .mlbridge_send(conn, "GET", paste0(conn$url, "/v2/health/proof?nonce=", nonce),
                             raw())
  proof <- tryCatch({
    text <- httr::content(response, as = "text", encoding = "UTF-8")
    if (httr::status_code(response) == 200) jsonlite::fromJSON(text, simplifyVector = FALSE)$proof
  }, error = function(e) NULL)
  expected <- .mlbridge_hmac(conn$token, paste0("mlbridge server proof v1\n", nonce))
  if (!is.character(proof) || length(proof) != 1 || !.mlbridge_same(proof, expected)) {
    stop(sprintf(paste("mlbridge: the server at %s could not prove it knows the secret;",
                       "not sending it (is this really your mlbridge server?)"), conn$url),
         call. = FALSE)
  }
  assign(key, TRUE, envir = .mlbridge_proven)
  invisible(TRUE)
}

# The Authorization header of a signed request: the secret never leaves.
.mlbridge_signature <- function(secret, method, target, body,
                                time = Sys.time(), nonce = .mlbridge_hex(openssl::rand_bytes(32))) {
  ts <- sprintf("%.0f", floor(as.numeric(time)))
  body_hash <- .mlbridge_hex(openssl::sha256(body))
  message <- paste("mlbridge request v1", toupper(method), target, ts, nonce, body_hash, sep = "\n")
  sprintf("MLBridge-HMAC-SHA256 ts=%s, nonce=%s, body=%s, sig=%s",
          ts, nonce, body_hash, .mlbridge_hmac(secret, message))
}

# The request target of a URL as the request line carries it: path and query.
.mlbridge_target <- function(url) sub("^[a-z]+://[^/]*", "", url)

# Lowercase hex HMAC-SHA256 of the UTF-8 bytes of `message` under `secret`.
.mlbridge_hmac <- function(secret, message) {
  .mlbridge_hex(openssl::sha256(charToRaw(enc2utf8(message)), key = charToRaw(enc2utf8(secret))))
}

.mlbridge_hex <- function(bytes) paste(as.character(unclass(bytes)), collapse = "")

# Whether two strings are equal, looking at every byte whatever the first difference.
.mlbridge_same <- function(a, b) {
  a <- charToRaw(a)
  b <- charToRaw(b)
  length(a) == length(b) && sum(as.integer(xor(a, b))) == 0
}
