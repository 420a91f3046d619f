# mlbridge client for R: send arrays to models served by `mlbridge serve`.
#
#   source("clients/r/mlbridge.R")
#   mlbridge_models()                      # c("mnist", "mnist-cnn")
#   logits <- mlbridge_predict("mnist", img)   # img: 28x28 matrix, img[row, col]
#
# Needs the packages httr and jsonlite. Requests use the KServe V2 JSON
# endpoint POST /v2/models/{name}/infer with the server's Bearer secret.

#' Find a running mlbridge server and read its secret.
#'
#' With no arguments, reads server.json in $MLBRIDGE_HOME (default
#' ~/.mlbridge), which `mlbridge serve` writes at start-up, and the token file
#' it names. Give `url` and `token_file` to reach a server elsewhere.
#' Returns a list(url, token) of class "mlbridge_connection".
mlbridge_connect <- function(url = NULL, token_file = NULL) {
  if (is.null(url) != is.null(token_file)) {
    stop("mlbridge_connect: give both url and token_file, or neither", call. = FALSE)
  }
  if (is.null(url)) {
    info <- .mlbridge_server_info(.mlbridge_home())
    url <- info$url
    token_file <- info$token_file
  }
  structure(list(url = sub("/+$", "", url), token = .mlbridge_read_token(token_file)),
            class = "mlbridge_connection")
}

#' Print a connection without showing its secret.
print.mlbridge_connection <- function(x, ...) {
  cat("<mlbridge connection to ", x$url, ">\n", sep = "")
  invisible(x)
}

#' List the served models' names, or return one model's V2 metadata as a list.
mlbridge_models <- function(name = NULL, conn = mlbridge_connect()) {
  if (!is.null(name)) {
    return(.mlbridge_request(conn, "GET", paste0("/v2/models/", name)))
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
  dims <- if (is.null(dim(x))) length(x) else dim(x)
  one_sample <- length(spec$shape) == length(dims) + 1
  if (one_sample) dims <- c(1L, dims)
  body <- .mlbridge_request_body(spec, dims, x)
  reply <- .mlbridge_request(conn, "POST", paste0("/v2/models/", model, "/infer"), body)
  out <- .mlbridge_output_array(reply$outputs[[1]])
  if (one_sample && length(dim(out)) == 2 && nrow(out) == 1) out[1, ] else out
}

.mlbridge_home <- function() {
  home <- Sys.getenv("MLBRIDGE_HOME")
  if (nzchar(home)) home else file.path(path.expand("~"), ".mlbridge")
}

.mlbridge_server_info <- function(home) {
  path <- file.path(home, "server.json")
  if (!file.exists(path)) {
    stop(sprintf(paste("mlbridge: no server found: %s does not exist;",
                       "start one with `mlbridge serve` or set MLBRIDGE_HOME"), path),
         call. = FALSE)
  }
  info <- jsonlite::fromJSON(path, simplifyVector = FALSE)
  if (is.null(info$url) || is.null(info$token_file)) {
    stop(sprintf("mlbridge: %s lacks \"url\" or \"token_file\"", path), call. = FALSE)
  }
  info
}

.mlbridge_read_token <- function(token_file) {
  if (!file.exists(token_file)) {
    stop(sprintf("mlbridge: token file %s does not exist", token_file), call. = FALSE)
  }
  token <- trimws(paste(readLines(token_file, warn = FALSE), collapse = ""))
  if (!nzchar(token)) stop(sprintf("mlbridge: token file %s is empty", token_file), call. = FALSE)
  token
}

.mlbridge_check_arguments <- function(model, x) {
  if (!is.character(model) || length(model) != 1 || !nzchar(model)) {
    stop("mlbridge_predict: model must be a model name, e.g. \"mnist\"", call. = FALSE)
  }
  if (!(is.numeric(x) || is.logical(x))) {
    stop(sprintf("mlbridge_predict: x must be a numeric array (28x28 or N x 28 x 28); got %s",
                 class(x)[1]), call. = FALSE)
  }
}

# Input metadata is fetched once per server and model: it names the input and
# its rank tells a single image from a batch.
.mlbridge_specs <- new.env(parent = emptyenv())

.mlbridge_input_spec <- function(conn, model) {
  key <- paste(conn$url, model, sep = "|")
  if (is.null(.mlbridge_specs[[key]])) {
    meta <- mlbridge_models(model, conn)
    if (length(meta$inputs) != 1) {
      stop(sprintf("mlbridge_predict: model '%s' has %d inputs; this client sends exactly one",
                   model, length(meta$inputs)), call. = FALSE)
    }
    input <- meta$inputs[[1]]
    .mlbridge_specs[[key]] <- list(name = input$name, datatype = input$datatype,
                                   shape = unlist(input$shape))
  }
  .mlbridge_specs[[key]]
}

.mlbridge_request_body <- function(spec, dims, x) {
  # Reversing the dimensions turns column-major storage into the row-major
  # (C) order of the V2 "data" field.
  data <- if (length(dim(x)) > 1) as.vector(aperm(x, rev(seq_along(dim(x))))) else as.vector(x)
  tensor <- list(name = spec$name, datatype = spec$datatype,
                 shape = I(as.integer(dims)), data = I(as.numeric(data)))
  jsonlite::toJSON(list(inputs = list(tensor)), auto_unbox = TRUE, digits = I(9),
                   na = "null")
}

.mlbridge_output_array <- function(output) {
  shape <- as.integer(unlist(output$shape))
  data <- as.numeric(unlist(output$data))
  if (length(data) != prod(shape)) {
    stop(sprintf("mlbridge: output \"%s\" has %d values, but its shape [%s] needs %d",
                 output$name, length(data), paste(shape, collapse = ", "), prod(shape)),
         call. = FALSE)
  }
  if (length(shape) == 1) return(data)
  aperm(array(data, rev(shape)), rev(seq_along(shape)))
}

.mlbridge_request <- function(conn, method, path, body = NULL) {
  url <- paste0(conn$url, path)
  headers <- httr::add_headers(Authorization = paste("Bearer", conn$token),
                               Accept = "application/json")
  # Loopback never goes through a proxy the user may have configured.
  options <- httr::config(noproxy = "127.0.0.1,localhost,::1", connecttimeout = 10)
  response <- tryCatch(
    if (is.null(body)) httr::GET(url, headers, options)
    else httr::POST(url, headers, options, httr::content_type_json(), body = body),
    error = function(e) {
      stop(sprintf("mlbridge: %s %s failed: %s", method, url, conditionMessage(e)),
           call. = FALSE)
    })
  text <- httr::content(response, as = "text", encoding = "UTF-8")
  status <- httr::status_code(response)
  if (status < 200 || status >= 300) .mlbridge_server_error(status, text, method, url)
  jsonlite::fromJSON(text, simplifyVector = FALSE)
}

.mlbridge_server_error <- function(status, text, method, url) {
  # The server answers {"error": "...", "code": "..."}; anything else (a
  # proxy's HTML page, say) is shown as it came, shortened.
  parsed <- tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE), error = function(e) NULL)
  message <- if (is.list(parsed) && !is.null(parsed$error)) parsed$error else trimws(text)
  if (is.na(message) || !nzchar(message)) message <- "the server sent an empty error reply"
  if (nchar(message) > 500) message <- paste0(substr(message, 1, 500), "...")
  code <- if (is.list(parsed) && is.character(parsed$code)) parsed$code else paste0("HTTP", status)
  condition <- structure(
    class = c("mlbridge_error", "error", "condition"),
    list(message = sprintf("mlbridge: %s (HTTP %d from %s %s)", message, status, method, url),
         call = NULL, status = status, code = code))
  stop(condition)
}
