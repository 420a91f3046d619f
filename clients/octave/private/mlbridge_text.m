function text = mlbridge_text(value, what)
%MLBRIDGE_TEXT VALUE as a char row; a MATLAB string scalar ("abc") becomes char.
%   In MATLAB, ['/v2/models/' "mnist"] is a two-element string array, not a path: every
%   entry point passes its text arguments through here first, so that 'mnist' and "mnist"
%   work alike. WHAT names the argument in the error raised for anything else
%   (mlbridge:usage): a string array of several elements, a number, a cell.
  if isa(value, 'string')
    if ~isscalar(value)
      error('mlbridge:usage', 'mlbridge: %s must be one string; got a string array of size %s', ...
            what, mat2str(size(value)));
    end
    value = char(value);
  end
  if ~ischar(value) || (~isempty(value) && ~isrow(value))
    error('mlbridge:usage', 'mlbridge: %s must be text (a char row or a string); got %s', ...
          what, class(value));
  end
  text = value;
end
