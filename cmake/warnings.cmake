# warnings.cmake — -Wall -Wextra (and -Werror with RINGKERNEL_WERROR) for our own targets only.
function(ringkernel_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:C,CXX>:-Wall -Wextra -Wshadow -Wconversion -Wno-sign-conversion>
    $<$<AND:$<COMPILE_LANGUAGE:C,CXX>,$<BOOL:${RINGKERNEL_WERROR}>>:-Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${RINGKERNEL_WERROR}>>:-Werror=all-warnings>
  )
endfunction()
