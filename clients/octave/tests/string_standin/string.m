classdef string
%STRING Test-only stand-in for MATLAB's string class, which Octave lacks.
%   STRING('a') is a string scalar and STRING('a', 'b') a 1x2 string array; like
%   MATLAB's, isa(s, 'string') is true, char(s) gives the text of a scalar, and
%   size/numel/isscalar count the elements. Only on the path in the client tests.
  properties
    Texts = {};
  end
  methods
    function obj = string(varargin)
      obj.Texts = varargin;
    end
    function text = char(obj)
      text = char(obj.Texts{:});
    end
    function n = numel(obj, varargin)
      n = numel(obj.Texts);
    end
    function tf = isscalar(obj)
      tf = numel(obj.Texts) == 1;
    end
    function varargout = size(obj, varargin)
      [varargout{1:max(nargout, 1)}] = size(obj.Texts, varargin{:});
    end
  end
end
